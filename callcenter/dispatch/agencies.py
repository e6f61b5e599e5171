"""The agency directory (``config/agencies.toml``): who handles which category where, on which lines.

Loaded once at start and validated strictly: a typo in a duty line is found when the app starts,
not at 3 a.m. when a fire is reported and the call to Damkar fails. Every error names the entry
(``[agencies.damkar].lines[1]``) so that whoever edits the file can fix it without reading code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from callcenter.forms.categories import CATEGORY_CODES, FLAG_CODES

#: An Asterisk dial string for a duty line: technology/resource, no dialplan-breaking characters
#: (a comma or ``&`` would turn one line into several arguments or several channels).
_DIAL_RE = re.compile(r"^(PJSIP|SIP|IAX2|DAHDI|Local)/[A-Za-z0-9_.+@-]+(/[A-Za-z0-9_.+@:-]+)?$")
#: E.164: a plus, a country code not starting with 0, at most 15 digits in all.
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CODE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FLAG_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: A line that rings longer than this is not a duty line anyone watches; below 5 s a phone barely rings.
MIN_TIMEOUT = 1
MAX_TIMEOUT = 120
PACKAGED = "agencies.toml"

LineKind = Literal["pbx", "twilio"]


class AgencyConfigError(ValueError):
    """The agency directory is unusable; the message names the file and the bad entry."""


def line_kind(line: str) -> LineKind:
    """``pbx`` for an Asterisk dial string (AMI Originate), ``twilio`` for an E.164 number."""
    return "twilio" if line.startswith("+") else "pbx"


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    categories: tuple[str, ...]
    #: District names from the intake list, or ``("*",)`` for the whole regency.
    districts: tuple[str, ...]
    #: Seconds one line may ring before the attempt counts as no answer.
    answer_timeout: int
    #: Tried in order: the duty desk, its backup, then numbers reached through Twilio.
    lines: tuple[str, ...]

    def serves(self, category: str, district: str | None) -> bool:
        if category not in self.categories:
            return False
        if "*" in self.districts:
            return True
        wanted = _key(district or "")
        return any(_key(d) == wanted for d in self.districts)

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "categories": list(self.categories)}


@dataclass(frozen=True)
class Rule:
    """``when_flag`` set on an intake adds agencies (a fire that needs water adds PDAM)."""

    when_flag: str
    add: tuple[str, ...]


@dataclass(frozen=True)
class Directory:
    agencies: Mapping[str, Agency]
    rules: tuple[Rule, ...]
    #: Seconds from the call's arrival to an acknowledged dispatch, per category, plus ``default``.
    sla: Mapping[str, int]

    def __contains__(self, code: object) -> bool:
        return code in self.agencies

    def get(self, code: str) -> Agency:
        """The agency for ``code``; KeyError for an unknown one (the API answers 422)."""
        return self.agencies[code]

    def propose(self, category: str, district: str | None, flags: Iterable[str] = ()) -> list[str]:
        """Agency codes to dispatch, in directory order, then the rule additions (no duplicates).

        Every agency whose categories include ``category`` and whose districts include ``district``
        (or ``*``); then, for every rule whose flag is in ``flags``, its agencies. The call-taker
        sees the proposal and may add or remove agencies: this only spares the usual clicks.
        """
        proposed = [a.code for a in self.agencies.values() if a.serves(category, district)]
        wanted = set(flags)
        for rule in self.rules:
            if rule.when_flag in wanted:
                proposed.extend(code for code in rule.add if code not in proposed)
        return proposed

    def sla_seconds(self, category: str) -> int:
        return self.sla.get(category, self.sla["default"])


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _strings(where: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise AgencyConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
    if not value and not allow_empty:
        raise AgencyConfigError(f"{where}: must not be empty")
    return tuple(v.strip() for v in value)


def _seconds(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AgencyConfigError(f"{where}: expected whole seconds between {low} and {high}, got {value!r}")
    return value


def _agency(where: str, code: str, raw: Any, districts: frozenset[str] | None) -> Agency:
    if not _CODE_RE.match(code):
        raise AgencyConfigError(f"{where}: agency code must be lower-case letters, digits, '_' or '-'")
    if not isinstance(raw, dict):
        raise AgencyConfigError(f"{where}: must be a table")
    unknown = set(raw) - {"name", "categories", "districts", "answer_timeout", "lines"}
    if unknown:
        raise AgencyConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AgencyConfigError(f"{where}.name: required")
    # Empty: an agency only ever added by a rule (PDAM for a fire that needs water).
    categories = _strings(f"{where}.categories", raw.get("categories", []), allow_empty=True)
    for i, category in enumerate(categories):
        if category not in CATEGORY_CODES:
            raise AgencyConfigError(f"{where}.categories[{i}]: unknown category {category!r}")
    served = _strings(f"{where}.districts", raw.get("districts", ["*"]))
    if districts is not None:
        for i, district in enumerate(served):
            if district != "*" and _key(district) not in districts:
                raise AgencyConfigError(f"{where}.districts[{i}]: unknown district {district!r}")
    timeout = _seconds(f"{where}.answer_timeout", raw.get("answer_timeout", 20), MIN_TIMEOUT, MAX_TIMEOUT)
    if "lines" not in raw or raw["lines"] == []:
        raise AgencyConfigError(f"{where}.lines: an agency needs at least one line")
    lines = _strings(f"{where}.lines", raw["lines"])
    for i, line in enumerate(lines):
        if line.startswith("+"):
            if not _E164_RE.match(line):
                raise AgencyConfigError(f"{where}.lines[{i}]: {line!r} is not an E.164 number (+62...)")
        elif not _DIAL_RE.match(line):
            raise AgencyConfigError(f"{where}.lines[{i}]: {line!r} is not a dial string like PJSIP/damkar")
    if len(set(lines)) != len(lines):
        raise AgencyConfigError(f"{where}.lines: a line is listed twice")
    return Agency(code, name.strip(), categories, served, timeout, lines)


def parse_agencies(data: Mapping[str, Any], where: str, districts: Iterable[str] | None = None) -> Directory:
    """Validate a parsed directory; ``districts`` (the intake list) also checks district names."""
    unknown = set(data) - {"sla", "agencies", "rules"}
    if unknown:
        raise AgencyConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    known_districts = frozenset(_key(d) for d in districts) if districts is not None else None

    raw_sla = data.get("sla", {})
    if not isinstance(raw_sla, dict):
        raise AgencyConfigError(f"{where}: [sla] must be a table")
    sla: dict[str, int] = {"default": 900}
    for category, value in raw_sla.items():
        if category != "default" and category not in CATEGORY_CODES:
            raise AgencyConfigError(f"{where}: [sla].{category}: unknown category")
        sla[category] = _seconds(f"{where}: [sla].{category}", value, 30, 86400)

    raw_agencies = data.get("agencies")
    if not isinstance(raw_agencies, dict) or not raw_agencies:
        raise AgencyConfigError(f"{where}: no [agencies.<code>] tables")
    agencies = {
        code: _agency(f"{where}: [agencies.{code}]", code, raw, known_districts) for code, raw in raw_agencies.items()
    }

    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise AgencyConfigError(f"{where}: 'rules' must be an array of tables ([[rules]])")
    rules: list[Rule] = []
    for i, raw in enumerate(raw_rules):
        at = f"{where}: [[rules]] #{i + 1}"
        if not isinstance(raw, dict) or set(raw) - {"when_flag", "add"}:
            raise AgencyConfigError(f"{at}: needs exactly 'when_flag' and 'add'")
        flag = raw.get("when_flag")
        if not isinstance(flag, str) or not _FLAG_RE.match(flag):
            raise AgencyConfigError(f"{at}.when_flag: expected a flag name like needs_water, got {flag!r}")
        if flag not in FLAG_CODES:
            # A rule on a flag the intake cannot set would never fire: refused here, not found in an emergency.
            known = ", ".join(sorted(FLAG_CODES))
            raise AgencyConfigError(f"{at}.when_flag: unknown flag {flag!r} (known: {known})")
        add = _strings(f"{at}.add", raw.get("add"))
        for code in add:
            if code not in agencies:
                raise AgencyConfigError(f"{at}.add: unknown agency {code!r}")
        rules.append(Rule(flag, add))
    return Directory(agencies, tuple(rules), sla)


def load_agencies(path: str | Path | None = None, districts: Sequence[str] | None = None) -> Directory:
    """Read and validate the directory; None or "": the packaged Jembrana sample. Raises AgencyConfigError."""
    if path is None or str(path) == "":
        text = resources.files("callcenter.dispatch").joinpath(PACKAGED).read_text(encoding="utf-8")
        where = f"packaged {PACKAGED}"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AgencyConfigError(f"{where}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AgencyConfigError(f"{where}: {exc}") from None
    return parse_agencies(data, where, districts)


__all__ = ["Agency", "AgencyConfigError", "Directory", "Rule", "line_kind", "load_agencies", "parse_agencies"]
