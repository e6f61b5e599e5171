"""Validation of the intake form: what a call-taker types becomes clean, typed incident fields.

Pure functions, no I/O besides loading the district list: the HTTP API calls ``validate_intake``
and stores what it returns. Whatever arrives (null, a list where text belongs, a megabyte of text,
NaN coordinates) ends as a per-field message the call-taker can act on, never as an exception: a
500 in the middle of an emergency call costs more than any stored typo. Text is kept verbatim
(trimmed) — escaping is the job of whoever renders it, and the record must show what was said.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from callcenter.forms.categories import CATEGORY_CODES, DEFAULT_PRIORITY, FLAGS, PRIORITY_CODES
from callcenter.forms.phone import parse_callback

#: Longest accepted value per text field, in characters (after trimming).
LIMITS: dict[str, int] = {
    "reporter_name": 128,
    "callback_number": 32,
    "address": 500,
    "district": 64,
    "subdistrict": 64,
    "landmark": 500,
    "victims_condition": 500,
    "access_route": 1000,
    "notes": 4000,
}
MAX_VICTIMS = 10_000
#: More entries than this in ``flags`` is not a form someone filled in; refused without looking further.
MAX_FLAG_ENTRIES = 4 * len(FLAGS)

FIELDS = (
    "reporter_name",
    "callback_number",
    "address",
    "district",
    "subdistrict",
    "landmark",
    "latitude",
    "longitude",
    "category",
    "victims_count",
    "victims_condition",
    "access_route",
    "notes",
    "priority",
    "flags",
)
REQUIRED = frozenset({"reporter_name", "callback_number", "address", "category"})
#: Free text that may span lines; the other text fields are one line.
_MULTILINE = frozenset({"address", "landmark", "victims_condition", "access_route", "notes"})
#: Optional text fields stored as "" when empty (the columns are NOT NULL).
_OPTIONAL_TEXT = ("landmark", "victims_condition", "access_route", "notes")
#: Control characters (NUL above all: PostgreSQL refuses it in text, which would be a 500).
_CONTROL_ANY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f]")
#: Reported at most this many unknown keys, each cut to a sane length: the reply must stay small.
_MAX_UNKNOWN_REPORTED = 10


class IntakeError(ValueError):
    """Invalid intake: ``fields`` maps each bad field to an Indonesian message, ``fields_en`` to English."""

    def __init__(self, fields: dict[str, str], fields_en: dict[str, str] | None = None) -> None:
        super().__init__("invalid intake: " + ", ".join(sorted(fields)))
        self.fields = fields
        self.fields_en = fields_en if fields_en is not None else dict(fields)


# -- districts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class District:
    name: str
    subdistricts: tuple[str, ...]


@dataclass(frozen=True)
class Districts:
    """The kecamatan of the centre's area and their desa/kelurahan, as the form offers them.

    Matching ignores case and surrounding spaces (a call-taker typing "negara" means "Negara"), and
    what is stored is the canonical spelling, so statistics group by one name per place.
    """

    districts: tuple[District, ...]
    _by_key: dict[str, District] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {_key(d.name): d for d in self.districts})

    def district(self, name: str) -> District | None:
        return self._by_key.get(_key(name))

    def subdistrict(self, district: District, name: str) -> str | None:
        wanted = _key(name)
        return next((s for s in district.subdistricts if _key(s) == wanted), None)

    def as_json(self) -> list[dict[str, Any]]:
        return [{"name": d.name, "subdistricts": list(d.subdistricts)} for d in self.districts]


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def load_districts(path: str | Path | None = None) -> Districts:
    """Read a district list (``[[district]] name = …, subdistricts = […]``); None: the packaged one.

    Raises ValueError naming the problem: a broken list is a configuration error and must stop the
    start-up loudly rather than leave call-takers with an empty dropdown.
    """
    if path is None or str(path) == "":
        text = resources.files("callcenter.forms").joinpath("districts.toml").read_text(encoding="utf-8")
        where = "packaged districts.toml"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: {exc}") from None
    entries = data.get("district", [])
    if not isinstance(entries, list):
        raise ValueError(f"{where}: 'district' must be an array of tables ([[district]])")
    districts: list[District] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ValueError(f"{where}: district #{i + 1} needs a name")
        name = " ".join(entry["name"].split())
        if _key(name) in seen:
            raise ValueError(f"{where}: district {name!r} listed twice")
        seen.add(_key(name))
        subs = entry.get("subdistricts", [])
        if not isinstance(subs, list) or not all(isinstance(s, str) and s.strip() for s in subs):
            raise ValueError(f"{where}: district {name!r}: subdistricts must be a list of names")
        if any(len(n) > LIMITS["district"] for n in [name, *subs]):
            raise ValueError(f"{where}: district {name!r}: names are limited to {LIMITS['district']} characters")
        districts.append(District(name, tuple(" ".join(s.split()) for s in subs)))
    return Districts(tuple(districts))


# -- validation ----------------------------------------------------------------------------------


class _Bad(Exception):
    """One field's problem, in both languages; collected by ``validate_intake``."""

    def __init__(self, id_text: str, en_text: str) -> None:
        super().__init__(en_text)
        self.id_text = id_text
        self.en_text = en_text


_REQUIRED_MSG = ("Wajib diisi.", "Required.")
_TEXT_MSG = ("Harus berupa teks.", "Must be text.")


def _text(name: str, value: Any, *, required: bool) -> str | None:
    """Trimmed text, or None when empty and optional."""
    if value is None:
        if required:
            raise _Bad(*_REQUIRED_MSG)
        return None
    if not isinstance(value, str):
        raise _Bad(*_TEXT_MSG)
    text = value.strip()
    if not text:
        if required:
            raise _Bad(*_REQUIRED_MSG)
        return None
    limit = LIMITS[name]
    if len(text) > limit:
        raise _Bad(f"Terlalu panjang (maksimal {limit} karakter).", f"Too long (at most {limit} characters).")
    control = _CONTROL_ANY if name in _MULTILINE else _CONTROL_LINE
    if control.search(text):
        raise _Bad("Mengandung karakter kontrol yang tidak diizinkan.", "Contains control characters.")
    return text


def _coordinate(value: Any, bound: float) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _Bad("Harus berupa angka.", "Must be a number.")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 32:
        text = value.strip().replace("\u2212", "-")
        if text.count(",") == 1 and "." not in text:  # Indonesian decimal comma: "-8,35"
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            raise _Bad("Harus berupa angka.", "Must be a number.") from None
    else:
        raise _Bad("Harus berupa angka.", "Must be a number.")
    if not math.isfinite(number):
        raise _Bad("Harus berupa angka.", "Must be a number.")
    if not -bound <= number <= bound:
        raise _Bad(f"Harus antara -{bound:g} dan {bound:g}.", f"Must be between -{bound:g} and {bound:g}.")
    return number


def _count(value: Any) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    number: int
    if isinstance(value, bool):
        raise _Bad("Harus berupa bilangan bulat.", "Must be a whole number.")
    if isinstance(value, int):
        number = value
    elif (isinstance(value, float) and math.isfinite(value) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value)
    ):
        number = int(value)
    else:
        raise _Bad("Harus berupa bilangan bulat.", "Must be a whole number.")
    if not 0 <= number <= MAX_VICTIMS:
        raise _Bad(f"Harus antara 0 dan {MAX_VICTIMS}.", f"Must be between 0 and {MAX_VICTIMS}.")
    return number


def _choice(value: Any, codes: frozenset[str], *, default: str | None) -> str:
    if value is None or value == "":
        if default is None:
            raise _Bad("Wajib dipilih.", "Required.")
        return default
    if not isinstance(value, str) or value not in codes:
        raise _Bad("Pilihan tidak dikenal.", "Unknown choice.")
    return value


_FLAG_ORDER = {c.code: i for i, c in enumerate(FLAGS)}


def _flags(value: Any) -> list[str]:
    """Known flag codes, each once, in the order of ``FLAGS`` (so a re-ticked box is no audit change)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad("Harus berupa daftar kode.", "Must be a list of codes.")
    if len(value) > MAX_FLAG_ENTRIES:
        raise _Bad("Terlalu banyak tanda.", "Too many flags.")
    for item in value:
        if not isinstance(item, str):
            raise _Bad("Harus berupa daftar kode.", "Must be a list of codes.")
        if item not in _FLAG_ORDER:
            shown = repr(item[:32])
            raise _Bad(f"Tanda tidak dikenal: {shown}.", f"Unknown flag: {shown}.")
    return sorted(set(value), key=_FLAG_ORDER.__getitem__)


def validate_intake(
    data: Mapping[str, Any],
    *,
    districts: Districts,
    region: str,
    partial: bool = False,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Clean intake fields, or raise IntakeError listing every bad field at once.

    ``partial`` (PATCH): only the fields given are checked and returned; required fields may be left
    out but not emptied. ``current`` is the stored incident a partial update applies to, so that
    rules spanning two fields (latitude with longitude, a desa within its kecamatan) hold for the
    result and not just for the patch. Returned values: text trimmed ("" for empty optional text,
    None for empty district/subdistrict/coordinates), callback number in E.164, counts as int,
    flags as a list of known codes (each once, in ``FLAGS`` order; [] when none).
    """
    errors: dict[str, str] = {}
    errors_en: dict[str, str] = {}

    def bad(name: str, id_text: str, en_text: str) -> None:
        errors.setdefault(name, id_text)
        errors_en.setdefault(name, en_text)

    if not isinstance(data, Mapping):
        raise IntakeError({"_": "Data formulir harus berupa objek JSON."}, {"_": "The form must be a JSON object."})
    unknown = [k for k in data if k not in FIELDS]
    for key in unknown[:_MAX_UNKNOWN_REPORTED]:
        bad(str(key)[:64], "Kolom tidak dikenal.", "Unknown field.")

    out: dict[str, Any] = {}
    for name in FIELDS:
        if partial and name not in data:
            continue
        value = data.get(name)
        try:
            if name in ("reporter_name", "address"):
                out[name] = _text(name, value, required=True)
            elif name == "callback_number":
                raw = _text(name, value, required=True)
                assert raw is not None
                try:
                    out[name] = parse_callback(raw, region)
                except ValueError:
                    raise _Bad(
                        "Nomor telepon tidak valid (contoh: 0812 3456 7890).",
                        "Not a valid phone number (e.g. 0812 3456 7890).",
                    ) from None
            elif name in _OPTIONAL_TEXT:
                out[name] = _text(name, value, required=False) or ""
            elif name in ("district", "subdistrict"):
                out[name] = _text(name, value, required=False)
            elif name == "latitude":
                out[name] = _coordinate(value, 90.0)
            elif name == "longitude":
                out[name] = _coordinate(value, 180.0)
            elif name == "victims_count":
                out[name] = _count(value)
            elif name == "category":
                out[name] = _choice(value, CATEGORY_CODES, default=None)
            elif name == "priority":
                out[name] = _choice(value, PRIORITY_CODES, default=DEFAULT_PRIORITY)
            elif name == "flags":
                out[name] = _flags(value)
        except _Bad as problem:
            bad(name, problem.id_text, problem.en_text)

    _check_pairs(data, out, current if partial else None, districts, bad)
    if errors:
        raise IntakeError(errors, errors_en)
    return out


def _check_pairs(
    data: Mapping[str, Any],
    out: dict[str, Any],
    current: Mapping[str, Any] | None,
    districts: Districts,
    bad: Callable[[str, str, str], None],
) -> None:
    """Rules between fields, applied to the result (the patch over ``current``), not to the patch alone."""

    def effective(name: str) -> Any:
        if name in out:
            return out[name]
        if name in data:  # given but invalid: already reported
            return _INVALID
        return (current or {}).get(name)

    lat, lon = effective("latitude"), effective("longitude")
    touched = {"latitude", "longitude"} & data.keys()
    if touched and _INVALID not in (lat, lon) and (lat is None) != (lon is None):
        missing = "longitude" if lon is None else "latitude"
        bad(
            missing,
            "Isi garis lintang dan garis bujur bersama-sama, atau kosongkan keduanya.",
            "Give latitude and longitude together, or neither.",
        )

    district_name, sub_name = effective("district"), effective("subdistrict")
    # Untouched place names are left alone, even if the list has changed since they were stored.
    if not {"district", "subdistrict"} & data.keys() or _INVALID in (district_name, sub_name):
        return
    district = None
    if district_name is not None:
        district = districts.district(district_name)
        if district is None:
            bad("district", "Kecamatan tidak ada dalam daftar.", "Not a district of this area.")
            return
        if "district" in out:
            out["district"] = district.name
    if sub_name is None:
        return
    if district is None:
        bad("subdistrict", "Pilih kecamatan terlebih dahulu.", "Choose the district first.")
        return
    canonical = districts.subdistrict(district, sub_name)
    if canonical is None:
        bad(
            "subdistrict",
            f"Desa/kelurahan tidak termasuk Kecamatan {district.name}.",
            f"Not a village of the district {district.name}.",
        )
    elif "subdistrict" in out:
        out["subdistrict"] = canonical


_INVALID = object()
