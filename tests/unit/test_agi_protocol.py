"""FastAGI wire rules: header parsing, response parsing and quoting that keeps caller data inert."""

from __future__ import annotations

import pytest

from callcenter.agi.protocol import (
    AgiProtocolError,
    AgiResponse,
    HeaderParser,
    ResponseAssembler,
    args_from_env,
    format_command,
    is_header_end,
    parse_header,
    parse_header_line,
    parse_response_line,
    quote,
    route_from_env,
    sanitize,
    split_command,
)

HEADER = (
    "agi_request: agi://127.0.0.1:4573/incoming\n"
    "agi_channel: PJSIP/caller-00000001\n"
    "agi_uniqueid: 1700000000.1\n"
    "agi_callerid: 081234567890\n"
    "agi_calleridname: Budi: the caller\n"
    "agi_accountcode: \n"
    "agi_network_script: incoming\n"
    "agi_arg_1: 2024-01-01T00:00:00Z\n"
    "agi_arg_2: 112\n"
    "\n"
)


# --- header ---------------------------------------------------------------------------------


def test_parse_header_env_args_route() -> None:
    request = parse_header(HEADER.encode())
    assert request.route == "incoming"
    assert request.args == ("2024-01-01T00:00:00Z", "112")
    assert request.env["agi_uniqueid"] == "1700000000.1"
    assert request.env["agi_accountcode"] == ""
    # Only the first ": " separates; the rest belongs to the value.
    assert request.env["agi_calleridname"] == "Budi: the caller"


def test_parse_header_tolerates_crlf() -> None:
    request = parse_header(HEADER.replace("\n", "\r\n"))
    assert request.env["agi_channel"] == "PJSIP/caller-00000001"
    assert request.env["agi_accountcode"] == ""
    assert request.route == "incoming"


def test_empty_value_without_trailing_space() -> None:
    assert parse_header_line(b"agi_rdnis:\n") == ("agi_rdnis", "")
    assert parse_header_line(b"agi_rdnis: \r\n") == ("agi_rdnis", "")


def test_non_utf8_value_does_not_fail() -> None:
    key, value = parse_header_line(b"agi_calleridname: Jos\xe9\n")
    assert key == "agi_calleridname"
    assert value.startswith("Jos")


@pytest.mark.parametrize(
    "line",
    [
        b"agi_request agi://x/incoming\n",  # no separator
        b"agi_request:agi://x/incoming\n",  # colon but no space, value not empty
        b"GET / HTTP/1.1\r\n",  # an HTTP probe
        b"Host: example.org\r\n",  # right shape, not an agi_ key
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03: x\n",  # TLS hello-ish junk
        b": value\n",
        b"agi_: empty key suffix\n",
    ],
)
def test_bad_header_lines_rejected(line: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        parse_header_line(line)


def test_bad_line_inside_block_rejected_with_clear_message() -> None:
    block = "agi_request: agi://h/incoming\nthis is not a header\n\n"
    with pytest.raises(AgiProtocolError, match="separator"):
        parse_header(block)


def test_oversize_header_rejected() -> None:
    big = "agi_request: agi://h/incoming\n" + "".join(f"agi_arg_{i}: {'x' * 100}\n" for i in range(1, 200)) + "\n"
    with pytest.raises(AgiProtocolError, match="exceeds 4096 bytes"):
        parse_header(big, max_bytes=4096)
    # The same header is fine under a larger limit, so the limit is what rejected it.
    assert len(parse_header(big, max_bytes=len(big)).args) == 199


def test_incremental_parser_counts_bytes_and_stops_at_limit() -> None:
    parser = HeaderParser(max_bytes=64)
    assert parser.feed(b"agi_request: agi://h/incoming\n") is None
    with pytest.raises(AgiProtocolError, match="exceeds 64 bytes"):
        parser.feed(b"agi_channel: PJSIP/" + b"x" * 40 + b"\n")


def test_incremental_parser_returns_request_at_blank_line() -> None:
    parser = HeaderParser()
    assert parser.feed(b"agi_network_script: incoming/\r\n") is None
    request = parser.feed(b"\r\n")
    assert request is not None
    assert request.route == "incoming"
    with pytest.raises(AgiProtocolError, match="after the end"):
        parser.feed(b"agi_x: y\n")


def test_unterminated_header_rejected() -> None:
    with pytest.raises(AgiProtocolError, match="not terminated"):
        parse_header("agi_request: agi://h/incoming\n")


def test_data_after_header_rejected() -> None:
    with pytest.raises(AgiProtocolError, match="after the end"):
        parse_header("agi_request: agi://h/incoming\n\nANSWER\n")


def test_empty_header_rejected() -> None:
    with pytest.raises(AgiProtocolError, match="empty"):
        parse_header("\n")


def test_is_header_end() -> None:
    assert is_header_end(b"\n")
    assert is_header_end(b"\r\n")
    assert not is_header_end(b" \n")
    assert not is_header_end(b"agi_x: \n")


@pytest.mark.parametrize(
    ("env", "route"),
    [
        ({"agi_network_script": "incoming"}, "incoming"),
        ({"agi_network_script": "/incoming"}, "incoming"),
        ({"agi_network_script": "incoming?x=1&y=2"}, "incoming"),
        ({"agi_network_script": "hangup/"}, "hangup"),
        ({"agi_request": "agi://127.0.0.1:4573/incoming?x=1"}, "incoming"),
        ({"agi_request": "agi://127.0.0.1:4573/"}, ""),
        ({"agi_request": "agi://127.0.0.1"}, ""),
        ({"agi_request": "/usr/share/asterisk/agi-bin/x.agi"}, ""),
        # agi_network_script wins over agi_request
        ({"agi_request": "agi://h/other", "agi_network_script": "incoming"}, "incoming"),
    ],
)
def test_route_from_env(env: dict[str, str], route: str) -> None:
    assert route_from_env(env) == route


def test_args_in_numeric_order() -> None:
    env = {f"agi_arg_{i}": str(i) for i in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9, 11)}
    assert args_from_env(env) == tuple(str(i) for i in range(1, 12))
    assert args_from_env({"agi_request": "x"}) == ()


def test_args_with_gap_rejected() -> None:
    with pytest.raises(AgiProtocolError, match="gaps"):
        args_from_env({"agi_arg_1": "a", "agi_arg_3": "c"})


# --- responses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1", AgiResponse(200, "1", "")),
        ("200 result=0 (timeout)", AgiResponse(200, "0", "timeout")),
        ("200 result=1 (value)", AgiResponse(200, "1", "value")),
        ("200 result=1 (a value (with) parens)", AgiResponse(200, "1", "a value (with) parens")),
        ("200 result=1 ()", AgiResponse(200, "1", "")),
        ("200 result=-1", AgiResponse(200, "-1", "")),
        ("200 result=0 endpos=12345", AgiResponse(200, "0", "", "endpos=12345")),
        ("200 result=0 (timeout) endpos=800", AgiResponse(200, "0", "timeout", "endpos=800")),
        ("200 result=1\r\n", AgiResponse(200, "1", "")),
        ("510 Invalid or unknown command", AgiResponse(510, "", "Invalid or unknown command")),
        (
            "511 Command Not Permitted on a dead channel or intercept routine",
            AgiResponse(511, "", "Command Not Permitted on a dead channel or intercept routine"),
        ),
    ],
)
def test_parse_response_line(line: str, expected: AgiResponse) -> None:
    assert parse_response_line(line) == expected


def test_response_helpers() -> None:
    assert parse_response_line("200 result=-1").result_int == -1
    assert parse_response_line("200 result=-1").ok
    assert not parse_response_line("511 dead").ok
    assert parse_response_line("510 x").result_int is None


@pytest.mark.parametrize("line", ["", "HTTP/1.1 200 OK", "200", "200 ok", "2000 result=1", "abc result=1"])
def test_garbage_response_rejected(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_response_line(line)


def test_multiline_520_usage_assembled() -> None:
    assembler = ResponseAssembler()
    lines = [
        "520-Invalid command syntax.  Proper usage follows:\n",
        " Usage: GET VARIABLE <variablename>\n",
        "        Returns 0 if <variablename> is not set.\n",
        "520 End of proper usage.\n",
    ]
    results = [assembler.feed(line) for line in lines]
    assert results[:3] == [None, None, None]
    final = results[3]
    assert final is not None
    assert final.code == 520
    assert "Proper usage follows" in final.data
    assert "Usage: GET VARIABLE" in final.data
    # The next response is parsed normally again.
    assert assembler.feed("200 result=1\n") == AgiResponse(200, "1", "")


def test_520_usage_lines_that_look_like_responses_are_kept_as_text() -> None:
    assembler = ResponseAssembler()
    assert assembler.feed("520-Invalid command syntax.\n") is None
    assert assembler.feed("200 result=1 is what you get\n") is None
    final = assembler.feed("520 End of proper usage.\n")
    assert final is not None
    assert final.code == 520
    assert "200 result=1 is what you get" in final.data


def test_hangup_notification_is_recorded_not_returned() -> None:
    assembler = ResponseAssembler()
    assert assembler.feed("HANGUP\n") is None
    assert assembler.hangups == 1
    assert assembler.feed("200 result=1 (x)\n") == AgiResponse(200, "1", "x")
    assert assembler.feed("HANGUP\r\n") is None
    assert assembler.hangups == 2


def test_assembler_rejects_garbage() -> None:
    with pytest.raises(AgiProtocolError):
        ResponseAssembler().feed("garbage\n")


# --- quoting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        "with space",
        'with "quotes"',
        "back\\slash",
        "trailing backslash\\",
        '\\"',
        "tab\there",
        "unicode é 中",
        '"; EXEC System rm -rf / ; "',
    ],
)
def test_quote_round_trips_through_asterisk_parser(value: str) -> None:
    line = format_command("SET VARIABLE", "NAME", value)
    assert split_command(line) == ["SET", "VARIABLE", "NAME", value]


@pytest.mark.parametrize(
    "value",
    [
        'x"\nEXEC System "rm -rf /',
        "x\r\nEXEC System reboot",
        "x\rEXEC System reboot",
        "x\x00\nHANGUP",
        "\n\n\n",
    ],
)
def test_injection_attempts_stay_one_line_one_argument(value: str) -> None:
    line = format_command("SET VARIABLE", "CC_NAME", value)
    assert "\n" not in line
    assert "\r" not in line
    assert "\x00" not in line
    words = split_command(line)
    # Still exactly one value argument: no extra command, no extra word.
    assert words[:3] == ["SET", "VARIABLE", "CC_NAME"]
    assert len(words) == 4
    assert words[3] == sanitize(value)


def test_quote_escapes() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert quote("a\nb") == '"a b"'
    assert quote("") == '""'


def test_format_command_rejects_bad_verbs() -> None:
    for verb in ["SET VARIABLE\nEXEC", "", "SET  VARIABLE", 'GET "X"', "EXEC Dial;"]:
        with pytest.raises(ValueError, match="verb"):
            format_command(verb, "x")
    assert format_command("EXEC Dial", "PJSIP/a,30") == 'EXEC Dial "PJSIP/a,30"'


def test_split_command_matches_asterisk_quirks() -> None:
    assert split_command('STREAM FILE "beep" ""') == ["STREAM", "FILE", "beep", ""]
    assert split_command('a"b c"d') == ["ab cd"]
    assert split_command("a\\ b  c") == ["a b", "c"]
