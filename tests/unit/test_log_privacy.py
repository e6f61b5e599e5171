"""No citizen's number or name in plain logs: keyed references instead, and a processor that catches
what a log call might still pass (the rendered line is what reaches disk)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from callcenter.logs import configure_logging, redact_personal, ref, set_pseudonym_key

NUMBER = "+6281234567890"


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    configure_logging("INFO", json=True, pseudonym_key="k" * 32)
    yield out
    structlog.reset_defaults()
    set_pseudonym_key("")


def test_references_are_keyed_and_stable() -> None:
    set_pseudonym_key("first-key")
    one = ref(NUMBER)
    assert one == ref(NUMBER) and one.startswith("r:") and NUMBER not in one and "81234567890" not in one
    set_pseudonym_key("second-key")
    assert ref(NUMBER) != one  # without the key, a reference cannot be recomputed from a guessed number
    assert ref("") == "" and ref(None) == ""
    set_pseudonym_key("")


def test_personal_keys_and_numbers_in_channel_names_never_reach_the_line(rendered: io.StringIO) -> None:
    log = structlog.get_logger("test")
    structlog.contextvars.bind_contextvars(caller=NUMBER, call_id="c1")
    try:
        log.warning(
            "tracker.whatever",
            calleridnum="081234567890",
            CallerIDName="Made Wirawan",
            reporter_name="Made Wirawan",
            channel="PJSIP/081234567890-00000001",
            to=NUMBER,
            nested={"callback_number": NUMBER, "queue": "calltakers"},
            queue="calltakers",
        )
    finally:
        structlog.contextvars.clear_contextvars()
    line = rendered.getvalue()
    assert "1234567890" not in line and "Wirawan" not in line, line
    entry = json.loads(line)
    assert entry["call_id"] == "c1" and entry["queue"] == "calltakers"
    assert entry["caller"] == ref(NUMBER) and entry["to"] == ref(NUMBER)
    assert entry["channel"].startswith("PJSIP/r:") and entry["channel"].endswith("-00000001")
    assert entry["nested"] == {"callback_number": ref(NUMBER), "queue": "calltakers"}


def test_processor_leaves_references_and_other_keys_alone() -> None:
    event = {"event": "x", "caller_ref": "r:0123456789ab", "caller": "withheld", "cause": 16, "user": "ayu"}
    assert redact_personal(None, "info", dict(event)) == event
