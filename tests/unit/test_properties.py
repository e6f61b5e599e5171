"""Property-based tests (hypothesis) of what outsiders feed us: the FastAGI wire format, AMI events and
the intake form. Each property says what must hold for *any* input, not for the examples we thought of:
no exception but the documented one, round trips that keep data intact, memory that stays bounded.

Kept small for CI (a few hundred examples each, a few seconds in all); ``scripts/fuzz.py`` runs the
same targets for millions of inputs.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from panoramisk.message import Message

from callcenter.agi.protocol import (
    DEFAULT_RESPONSE_MAX_BYTES,
    AgiProtocolError,
    AgiResponse,
    HeaderParser,
    ResponseAssembler,
    format_command,
    parse_header,
    parse_response_line,
    sanitize,
    split_command,
)
from callcenter.forms.intake import FIELDS, LIMITS, IntakeError, load_districts, validate_intake
from callcenter.queue.ami import MAX_MESSAGE_BYTES, _Protocol
from callcenter.queue.tracker import QueueTracker
from callcenter.testing.memory_store import AMI_EVENTS, MemoryStore

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DISTRICTS = load_districts(None)

# -- FastAGI ----------------------------------------------------------------------------------------------

#: Header values as Asterisk may send them: any text but the line end (a caller name from a SIP trunk).
header_values = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=80)
header_keys = st.from_regex(r"agi_[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(lambda k: not k.startswith("agi_arg_"))


@FAST
@example(lines=[b"agi_request: agi://[::1/incoming", b""])  # urlsplit's ValueError, found by scripts/fuzz.py
@given(lines=st.lists(st.binary(max_size=200), max_size=40))
def test_header_parser_takes_any_bytes(lines: list[bytes]) -> None:
    """Any bytes, line by line: a request, "need more", or AgiProtocolError — and never past max_bytes."""
    parser = HeaderParser(max_bytes=1024)
    for line in lines:
        try:
            request = parser.feed(line + b"\n")
        except AgiProtocolError:
            return
        assert parser.size <= 1024
        if request is not None:
            assert request.env == parser.env and isinstance(request.route, str)
            return


@FAST
@given(
    env=st.dictionaries(header_keys, header_values, max_size=15),
    args=st.lists(header_values, max_size=12),
    route=st.from_regex(r"[a-z]{1,12}", fullmatch=True),
    crlf=st.booleans(),
)
def test_header_round_trip(env: dict[str, str], args: list[str], route: str, crlf: bool) -> None:
    """What Asterisk sends is what a route sees: every key, every value (trailing blanks included),
    the args in order, the route."""
    env = {k: v for k, v in env.items() if k not in ("agi_network_script", "agi_request")}
    values = {**env, "agi_network_script": route, **{f"agi_arg_{i}": a for i, a in enumerate(args, 1)}}
    end = "\r\n" if crlf else "\n"
    block = "".join(f"{k}: {v}{end}" for k, v in values.items()) + end
    request = parse_header(block.encode("utf-8"), max_bytes=1 << 20)
    assert request.env == values
    assert request.args == tuple(args)
    assert request.route == route


@FAST
@given(lines=st.lists(st.binary(max_size=300), max_size=600))
def test_response_assembler_is_bounded(lines: list[bytes]) -> None:
    """Any lines: responses or AgiProtocolError, and a pending usage block never holds more than the cap."""
    assembler = ResponseAssembler(max_bytes=4096, max_lines=64)
    for line in lines:
        try:
            response = assembler.feed(line + b"\n")
        except AgiProtocolError:
            assembler = ResponseAssembler(max_bytes=4096, max_lines=64)
            continue
        pending = assembler._usage or []
        assert sum(len(p) for p in pending) <= 4096 and len(pending) <= 64
        if response is not None:
            assert isinstance(response, AgiResponse) and 100 <= response.code <= 999


@FAST
@given(
    result=st.from_regex(r"-?[0-9]{1,6}", fullmatch=True),
    data=st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=60),
    extra=st.from_regex(r"(endpos=[0-9]{1,8})?", fullmatch=True),
)
def test_response_line_round_trip(result: str, data: str, extra: str) -> None:
    """``200 result=R (value) extra``: the value comes back whole, parentheses and spaces included."""
    line = f"200 result={result} ({data}) {extra}".rstrip()
    response = parse_response_line(line + "\n")
    assert (response.code, response.result, response.data, response.extra) == (200, result, data, extra)


@FAST
@given(args=st.lists(st.text(max_size=40), max_size=5))
def test_quoted_arguments_never_add_a_command_or_an_argument(args: list[str]) -> None:
    """Caller data in a command: still one line, and Asterisk splits it back into exactly our arguments."""
    line = format_command("SET VARIABLE", *args)
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert split_command(line) == ["SET", "VARIABLE", *(sanitize(a) for a in args)]


def test_default_cap_holds_one_full_stream_line() -> None:
    """The cap must not refuse what the stream limit lets through as one legitimate line (a long value)."""
    assert DEFAULT_RESPONSE_MAX_BYTES > 65536


# -- AMI --------------------------------------------------------------------------------------------------

ami_keys = st.sampled_from(
    [
        "Event",
        "Uniqueid",
        "Linkedid",
        "Channel",
        "DestChannel",
        "DestLinkedid",
        "Queue",
        "Position",
        "OriginalPosition",
        "Count",
        "CallerIDNum",
        "Interface",
        "Location",
        "MemberName",
        "HoldTime",
        "RingTime",
        "TalkTime",
        "Reason",
        "Cause",
        "Status",
        "Paused",
        "InCall",
        "UserEvent",
        "QueueStatus",
        "Round",
        "TransfereeUniqueid",
        "Result",
    ]
)
ami_values = st.one_of(
    st.sampled_from(["", "1", "0", "-1", "u1", "u2", "calltakers", "PJSIP/taker1", "caller", "yes", "NaN", "1e999"]),
    st.text(max_size=20),
)
ami_events = st.builds(
    lambda event, fields: {"Event": event, **{k: v for k, v in fields.items() if k != "Event"}},
    st.sampled_from(AMI_EVENTS),
    st.dictionaries(ami_keys, ami_values, max_size=10),
)


@FAST
@given(events=st.lists(ami_events, max_size=30))
def test_tracker_takes_any_event_sequence(events: list[dict[str, str]]) -> None:
    """Any order, any field missing or odd: no exception leaves ``handle``, the live picture stays
    well-formed, a hung-up channel is neither waiting nor connected, and every event is written or logged."""

    async def run() -> None:
        store = MemoryStore()
        tracker = QueueTracker(store)  # type: ignore[arg-type]
        for event in events:
            await tracker.handle(Message(event))
            live = tracker.live
            assert all(isinstance(k, str) and w.uniqueid == k for k, w in live.waiting.items())
            assert set(live.channels) <= set(live.connected) | set(live.channels)
            if event["Event"] == "Hangup" and event.get("Uniqueid"):
                assert event["Uniqueid"] not in live.waiting and event["Uniqueid"] not in live.connected
        assert await tracker.flush(timeout=5)
        await tracker.close(timeout=5)

    asyncio.run(run())


def ami_bytes(messages: Sequence[Mapping[str, str]]) -> bytes:
    return b"".join(
        "".join(f"{k}: {v}\r\n" for k, v in m.items()).encode("ascii", "ignore") + b"\r\n" for m in messages
    )


class Dispatched:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def dispatch(self, message: Message) -> None:
        self.messages.append(dict(message))


def protocol() -> tuple[_Protocol, Dispatched]:
    proto = _Protocol()
    proto.connection_made(None)
    sink = Dispatched()
    proto.factory = sink
    return proto, sink


ascii_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(str.strip)


@settings(max_examples=100, deadline=None)
@given(
    messages=st.lists(
        st.dictionaries(st.from_regex(r"[A-Z][A-Za-z]{0,12}", fullmatch=True), ascii_values, max_size=6).map(
            lambda d: {"Event": "Test", **{k: v for k, v in d.items() if k not in ("Event", "Response")}}
        ),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_ami_framing_does_not_depend_on_how_tcp_splits_the_stream(
    messages: list[dict[str, str]], cuts: list[int]
) -> None:
    stream = ami_bytes(messages)
    whole, whole_sink = protocol()
    whole.data_received(stream)
    split, split_sink = protocol()
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(points):
        split.data_received(stream[start:end])
    assert split_sink.messages == whole_sink.messages
    assert len(whole_sink.messages) == len(messages)


@FAST
@given(chunks=st.lists(st.binary(max_size=400), max_size=30))
def test_ami_protocol_takes_any_bytes(chunks: list[bytes]) -> None:
    """Junk from the AMI socket: skipped (and logged), never an exception that would drop the link."""
    proto, _sink = protocol()
    for chunk in chunks:
        proto.data_received(chunk)
    assert sum(len(p) for p in proto.queue) <= len(b"".join(chunks))


def test_an_endless_ami_message_does_not_grow_memory() -> None:
    """A message that never ends (no blank line): the unfinished part stays under the cap, and the next
    real message after a blank line still arrives."""
    proto, sink = protocol()
    chunk = b"X-Junk: " + b"j" * 65528 + b"\r\n"
    for _ in range(100):  # 6.4 MiB
        proto.data_received(chunk)
        assert sum(len(p) for p in proto.queue) <= MAX_MESSAGE_BYTES + len(chunk)
    proto.data_received(b"\r\n" + ami_bytes([{"Event": "Hangup", "Uniqueid": "u1"}]))
    assert (sink.messages[-1]["Event"], sink.messages[-1]["Uniqueid"]) == ("Hangup", "u1")


# -- intake -----------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=60),
    st.sampled_from(["Negara", "Melaya", "Lelateng", "fire", "medical", "critical", "0812-3456-7890", " "]),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
intake_forms = st.dictionaries(st.sampled_from([*FIELDS, "unknown", "__proto__"]), json_values, max_size=len(FIELDS))


@FAST
@given(form=intake_forms, partial=st.booleans())
def test_intake_gives_clean_fields_or_field_messages(form: dict[str, Any], partial: bool) -> None:
    """Anything a client may POST: clean, typed, bounded fields, or IntakeError naming fields — and what
    was accepted is accepted again unchanged (the stored incident re-validates as itself)."""
    try:
        clean = validate_intake(form, districts=DISTRICTS, region="ID", partial=partial)
    except IntakeError as exc:
        assert exc.fields and all(isinstance(k, str) and isinstance(v, str) for k, v in exc.fields.items())
        return
    assert set(clean) <= set(FIELDS)
    for name, value in clean.items():
        if name in LIMITS and isinstance(value, str):
            assert len(value) <= LIMITS[name] and value == value.strip()
            assert "\x00" not in value
        if name in ("latitude", "longitude") and value is not None:
            assert isinstance(value, float) and math.isfinite(value)
        if name == "victims_count":
            assert isinstance(value, int) and value >= 0
    if clean.get("callback_number"):
        assert clean["callback_number"].startswith("+")
    again = validate_intake(clean, districts=DISTRICTS, region="ID", partial=partial)
    assert again == clean


@pytest.mark.parametrize("size", [10, 100_000])
def test_intake_huge_text_is_a_field_message(size: int) -> None:
    form = {"reporter_name": "x" * size, "callback_number": "08123456789", "address": "a", "category": "fire"}
    if size > LIMITS["reporter_name"]:
        with pytest.raises(IntakeError) as info:
            validate_intake(form, districts=DISTRICTS, region="ID")
        assert set(info.value.fields) == {"reporter_name"}
    else:
        assert validate_intake(form, districts=DISTRICTS, region="ID")["reporter_name"] == "x" * size
