"""``callcenter check-config``: everything ``callcenter run`` would refuse at start, found before a restart.

Run by the systemd unit as ``ExecStartPre=`` and by an operator after editing a file: a bad agency
entry found at 03:00 by a restarting service is an outage; found by this command, it is a message.
Errors are what stops the app; warnings are settings that work but are probably not meant
(a listener on a public address, an empty AMI secret).
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field

from callcenter.config import Config
from callcenter.dispatch.agencies import AgencyConfigError, load_agencies
from callcenter.forms.intake import load_districts


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _public(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host not in ("localhost",)


def check_config(config: Config) -> Report:
    """Validate what the config points at (it has itself been validated by ``load_config``)."""
    report = Report()
    try:
        districts = load_districts(config.intake.districts_file or None)
        report.notes.append(f"districts: {len(districts.districts)} from {config.intake.districts_file or 'package'}")
    except ValueError as exc:
        report.errors.append(f"[intake].districts_file: {exc}")
        districts = None
    try:
        names = [d.name for d in districts.districts] if districts is not None else None
        directory = load_agencies(config.dispatch.agencies_file or None, names)
        report.notes.append(f"agencies: {len(directory.agencies)} from {config.dispatch.agencies_file or 'package'}")
    except AgencyConfigError as exc:
        report.errors.append(f"[dispatch].agencies_file: {exc}")
    q = config.queue
    if q.prank_priority >= q.default_priority:
        report.errors.append(
            f"[queue]: prank_priority ({q.prank_priority}) must be below default_priority ({q.default_priority}):"
            " Asterisk serves higher priorities first"
        )
    if q.default_priority < 0 or q.prank_priority < 0:
        report.errors.append("[queue]: priorities must not be negative")
    if not q.name or any(c in q.name for c in ",|;\n"):
        report.errors.append(f"[queue].name: {q.name!r} is not a usable queue name")
    if not config.agi.secret:
        report.errors.append(
            "[agi].secret is empty (set CALLCENTER_AGI_SECRET and the same value in CC_AGI_URL=agi://host:port/<secret>)"
        )
    if not config.ami.secret:
        report.warnings.append("[ami].secret is empty (set CALLCENTER_AMI_SECRET): the AMI login will be refused")
    for section, host in (("agi", config.agi.host), ("web", config.web.host), ("ami", config.ami.host)):
        if _public(host):
            report.warnings.append(f"[{section}].host = {host}: not loopback (see docs/deploy.md before exposing it)")
    if config.twilio.account_sid and not config.twilio.auth_token:
        report.errors.append("[twilio]: account_sid without auth_token (set CALLCENTER_TWILIO_AUTH_TOKEN)")
    if config.twilio.account_sid and not config.twilio.public_url.startswith("https://"):
        report.warnings.append("[twilio].public_url should be the centre's https:// address for Twilio's webhooks")
    if not config.store.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        report.errors.append(
            f"[store].url: {config.store.url.split('://', 1)[0]}:// is not supported "
            "(sqlite+aiosqlite:// or postgresql+asyncpg://)"
        )
    return report


def print_report(report: Report) -> int:
    """Print the findings; exit status 1 when anything would stop the app, else 0."""
    for note in report.notes:
        print(f"ok: {note}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    if report.errors:
        print(f"callcenter: {len(report.errors)} configuration error(s)", file=sys.stderr)
        return 1
    print("configuration ok")
    return 0
