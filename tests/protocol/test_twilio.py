"""Twilio duty lines: the real ``twilio`` client against a local recorder, and the webhooks on the real app.

Nothing here leaves the machine: the client is rebased onto :class:`FakeTwilio` on 127.0.0.1, and the
webhooks are played by signing requests the way Twilio does (:func:`sign`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs
from twilio.base.exceptions import TwilioException

from callcenter.app import create_app
from callcenter.config import ConfigError, TwilioConfig, replace
from callcenter.dispatch import twilio_line
from callcenter.dispatch.twilio_line import TwilioLine, TwilioLineError, TwilioNotConfigured
from callcenter.testing.fake_twilio import FakeTwilio, sign
from callcenter.testing.web import login, make_user, test_config
from callcenter.web.auth import PUBLIC_POST_PATHS
from callcenter.web.keys import STORE, TWILIO

Client = TestClient[web.Request, web.Application]
PUBLIC_URL = "https://cc112.jembrana.example.id"
FROM = "+62365100112"
TO = "+6236541113"
BRIEFING = "Kebakaran rumah di Jalan Udayana 5, Negara. Dua korban. Akses lewat gang <B> & pasar."
GATHER = "/api/twilio/gather"
STATUS = "/api/twilio/status"


@dataclass
class Results:
    seen: list[tuple[int, str, str]] = field(default_factory=list)

    async def __call__(self, attempt_id: int, outcome: str, reason: str) -> None:
        self.seen.append((attempt_id, outcome, reason))


def twilio_config(fake: FakeTwilio, **changes: str) -> TwilioConfig:
    values = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": FROM,
        "public_url": PUBLIC_URL + "/",  # a trailing slash must not end up doubled in the URLs
        "api_base": fake.base_url,
    }
    values.update(changes)
    return TwilioConfig(**values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as server:
        yield server


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
async def line(fake: FakeTwilio, results: Results) -> AsyncIterator[TwilioLine]:
    tl = TwilioLine(twilio_config(fake), results)
    yield tl
    await tl.close()


def parse_twiml(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "Response"
    return root


# -- the REST API, as the real client sends it -----------------------------------------------------------


async def test_call_sends_the_documented_request(fake: FakeTwilio, line: TwilioLine) -> None:
    sid = await line.call(7, TO, BRIEFING, timeout=20)
    assert sid.startswith("CA") and len(sid) == 34
    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    assert req.auth == (fake.account_sid, fake.auth_token)
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert req.param("To") == TO
    assert req.param("From") == FROM
    assert req.param("Timeout") == "20"
    assert req.param("StatusCallback") == f"{PUBLIC_URL}/api/twilio/status?attempt=7"
    assert req.param("StatusCallbackMethod") == "POST"
    assert req.params("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert "Url" not in dict(req.form)
    twiml = req.param("Twiml")
    assert "<Gather" in twiml
    assert '<Say language="id-ID">' in twiml
    root = parse_twiml(twiml)
    gather = root[0]
    assert gather.tag == "Gather"
    assert gather.attrib == {
        "numDigits": "1",
        "timeout": "20",
        "action": f"{PUBLIC_URL}/api/twilio/gather?attempt=7",
        "method": "POST",
    }
    says = list(gather)
    assert [s.tag for s in says] == ["Say", "Say"]
    assert all(s.attrib == {"language": "id-ID"} for s in says)
    assert says[0].text == BRIEFING  # escaped on the wire, intact once parsed
    assert says[1].text == "Tekan 1 untuk menerima, 2 untuk mengulang."
    # Nothing pressed: Twilio falls through the Gather to a closing message.
    assert [e.tag for e in root[1:]] == ["Say", "Hangup"]
    assert root[1].attrib == {"language": "id-ID"} and root[1].text


async def test_gather_timeout_can_differ_from_the_ring_timeout(fake: FakeTwilio, line: TwilioLine) -> None:
    await line.call(8, TO, BRIEFING, timeout=25, gather_timeout=12)
    [req] = fake.requests
    assert req.param("Timeout") == "25"
    assert parse_twiml(req.param("Twiml"))[0].attrib["timeout"] == "12"


async def test_sms_sends_to_from_and_body(fake: FakeTwilio, line: TwilioLine) -> None:
    sid = await line.sms(TO, "112 Jembrana: kebakaran, Jl. Udayana 5. Ref INC-42.")
    assert sid.startswith("SM") and len(sid) == 34
    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert req.auth == (fake.account_sid, fake.auth_token)
    assert dict(req.form) == {"To": TO, "From": FROM, "Body": "112 Jembrana: kebakaran, Jl. Udayana 5. Ref INC-42."}


async def test_long_texts_are_cut_to_what_twilio_accepts(fake: FakeTwilio, line: TwilioLine) -> None:
    await line.call(9, TO, "Bahaya & <api> " * 600, timeout=20)
    await line.sms(TO, "x" * 5000)
    call, message = fake.requests
    twiml = call.param("Twiml")
    assert len(twiml) <= 4000
    gather = parse_twiml(twiml)[0]
    assert gather[0].text and gather[0].text.startswith("Bahaya & <api>") and gather[0].text.endswith("…")
    assert gather[1].text == "Tekan 1 untuk menerima, 2 untuk mengulang."
    assert len(message.param("Body")) == 1600


async def test_wrong_credentials_are_a_clear_error(fake: FakeTwilio, results: Results) -> None:
    tl = TwilioLine(twilio_config(fake, auth_token="not-the-token"), results)
    with pytest.raises(TwilioLineError, match=r"HTTP 401, code 20003"):
        await tl.call(7, TO, BRIEFING, timeout=20)
    [req] = fake.requests
    assert req.auth == (fake.account_sid, "not-the-token")
    await tl.close()


async def test_api_errors_are_raised_and_the_attempt_is_not_kept(fake: FakeTwilio, line: TwilioLine) -> None:
    fake.fail_next(400, 21211, "Invalid 'To' Phone Number")
    with pytest.raises(TwilioLineError, match="21211"):
        await line.call(7, TO, BRIEFING, timeout=20)
    assert 7 not in line._calls
    fake.fail_next(400, 21610, "Attempt to send to unsubscribed recipient")
    with pytest.raises(TwilioLineError, match="21610"):
        await line.sms(TO, "hi")


async def test_an_unreachable_api_is_a_clear_error(results: Results) -> None:
    async with FakeTwilio() as gone:
        cfg = twilio_config(gone)
    tl = TwilioLine(cfg, results)  # the recorder has stopped: connection refused on loopback
    with pytest.raises(TwilioLineError, match=r"calls\.create failed"):
        await tl.call(7, TO, BRIEFING, timeout=20)
    await tl.close()


@pytest.mark.parametrize(
    ("missing", "names"),
    [
        (("account_sid", "auth_token"), ["CALLCENTER_TWILIO_ACCOUNT_SID", "CALLCENTER_TWILIO_AUTH_TOKEN"]),
        (("auth_token",), ["CALLCENTER_TWILIO_AUTH_TOKEN"]),
        (("from_number",), ["CALLCENTER_TWILIO_FROM_NUMBER"]),
        (("public_url",), ["CALLCENTER_TWILIO_PUBLIC_URL"]),
    ],
)
async def test_missing_configuration_names_the_environment_variables(
    fake: FakeTwilio, results: Results, monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...], names: list[str]
) -> None:
    # The twilio library would fall back to these on its own; ours must not.
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", fake.auth_token)
    tl = TwilioLine(twilio_config(fake, **dict.fromkeys(missing, "")), results)  # constructing is fine
    with pytest.raises(TwilioNotConfigured) as info:
        await tl.call(7, TO, BRIEFING, timeout=20)
    assert isinstance(info.value, ConfigError)
    for name in names:
        assert name in str(info.value)
    assert fake.requests == []
    await tl.close()


async def test_twilio_environment_variables_cannot_redirect_the_client(
    fake: FakeTwilio, line: TwilioLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    await line.call(7, TO, BRIEFING, timeout=20)
    assert len(fake.requests) == 1


async def test_bad_numbers_are_refused_before_any_request(fake: FakeTwilio, line: TwilioLine) -> None:
    for to in ("036541113", "PJSIP/damkar", "+62 365 41113", "+0123456789", ""):
        with pytest.raises(ValueError, match=r"E\.164"):
            await line.call(7, to, BRIEFING, timeout=20)
        with pytest.raises(ValueError, match=r"E\.164"):
            await line.sms(to, "x")
    assert fake.requests == []


def test_the_rebased_client_never_sends_elsewhere() -> None:
    http = twilio_line._RebasedHttpClient("http://127.0.0.1:9", 1.0)
    with pytest.raises(TwilioException, match="refusing"):
        http.request("GET", "https://api.twilio.com.evil.example/x")
    with pytest.raises(TwilioException, match="refusing"):
        http.request("GET", "https://messaging.twilio.com/v1/Services")


# -- webhooks on the real app ------------------------------------------------------------------------------


@dataclass
class Hooks:
    client: Client
    line: TwilioLine
    results: Results
    fake: FakeTwilio
    sid: str

    async def post(
        self,
        path: str,
        params: dict[str, str],
        *,
        signature: str | None = None,
        token: str | None = None,
        signed_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """POST ``params`` as Twilio would, signed over ``public_url + path`` unless told otherwise."""
        if signature is None:
            signature = sign(signed_url or PUBLIC_URL + path, params, token or self.fake.auth_token)
        all_headers = {"X-Twilio-Signature": signature, **(headers or {})}
        if signature == "":
            del all_headers["X-Twilio-Signature"]
        return await self.client.post(path, data=params, headers=all_headers)

    def gather_params(self, digits: str) -> dict[str, str]:
        return {
            "AccountSid": self.fake.account_sid,
            "CallSid": self.sid,
            "CallStatus": "in-progress",
            "Digits": digits,
            "Direction": "outbound-api",
            "FinishedOnKey": "",
            "From": FROM,
            "To": TO,
        }

    def status_params(self, status: str, sid: str | None = None) -> dict[str, str]:
        return {
            "AccountSid": self.fake.account_sid,
            "CallSid": sid or self.sid,
            "CallStatus": status,
            "Direction": "outbound-api",
            "From": FROM,
            "To": TO,
            "ApiVersion": "2010-04-01",
            "Timestamp": "Tue, 25 Nov 2025 08:00:00 +0000",
        }


@pytest.fixture
async def hooks(tmp_path: Path, fake: FakeTwilio, results: Results) -> AsyncIterator[Hooks]:
    cfg = replace(test_config(tmp_path), twilio={**twilio_config(fake).__dict__})
    tl = TwilioLine(cfg.twilio, results)
    app = create_app(cfg)
    app[TWILIO] = tl
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    sid = await tl.call(7, TO, BRIEFING, timeout=20)
    yield Hooks(client, tl, results, fake, sid)
    await client.close()
    await tl.close()


async def test_signed_key_1_accepts_once(hooks: Hooks) -> None:
    resp = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"))
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    root = parse_twiml(await resp.text())
    assert [e.tag for e in root] == ["Say", "Hangup"]
    assert root[0].attrib == {"language": "id-ID"} and "diterima" in (root[0].text or "")
    assert hooks.results.seen == [(7, "accepted", "digit-1")]
    # Twilio retries a webhook it thinks failed: still one acceptance.
    again = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"))
    assert again.status == 200
    # The call then ends: completed after an acceptance is not a missing key.
    done = await hooks.post(f"{STATUS}?attempt=7", hooks.status_params("completed"))
    assert done.status == 204
    assert hooks.results.seen == [(7, "accepted", "digit-1")]


async def test_signed_key_2_repeats_the_briefing(hooks: Hooks) -> None:
    resp = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("2"))
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    root = parse_twiml(await resp.text())
    gather = root[0]
    assert gather.tag == "Gather"
    assert gather.attrib["action"] == f"{PUBLIC_URL}/api/twilio/gather?attempt=7"
    assert gather.attrib["numDigits"] == "1"
    assert [s.text for s in gather] == [BRIEFING, "Tekan 1 untuk menerima, 2 untuk mengulang."]
    assert hooks.results.seen == []
    # ... and pressing 1 after the repeat accepts.
    assert (await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"))).status == 200
    assert hooks.results.seen == [(7, "accepted", "digit-1")]


async def test_a_key_after_the_dispatcher_moved_on_is_told_so(hooks: Hooks) -> None:
    async def too_late(attempt_id: int, outcome: str, reason: str) -> bool:
        hooks.results.seen.append((attempt_id, outcome, reason))
        return False

    hooks.line.on_result = too_late
    resp = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"))
    assert resp.status == 200
    root = parse_twiml(await resp.text())
    assert "dialihkan" in (root[0].text or "") and "diterima" not in (root[0].text or "")
    # The call's end reports nothing more: the attempt is settled.
    assert (await hooks.post(f"{STATUS}?attempt=7", hooks.status_params("completed"))).status == 204
    assert hooks.results.seen == [(7, "accepted", "digit-1")]


async def test_a_failed_report_lets_the_officer_press_1_again(hooks: Hooks) -> None:
    calls = 0

    async def flaky(attempt_id: int, outcome: str, reason: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database hiccup")
        hooks.results.seen.append((attempt_id, outcome, reason))

    hooks.line.on_result = flaky
    first = parse_twiml(await (await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"))).text())
    assert [e.tag for e in first][:2] == ["Say", "Gather"], "apology, then the briefing and the prompt again"
    assert hooks.results.seen == []
    second = parse_twiml(await (await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"))).text())
    assert "diterima" in (second[0].text or "")
    assert hooks.results.seen == [(7, "accepted", "digit-1")]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("no-answer", "no_answer"),
        ("busy", "busy"),
        ("failed", "failed"),
        ("canceled", "failed"),
        ("completed", "no_key"),
    ],
)
async def test_signed_final_status_maps_to_an_outcome(hooks: Hooks, status: str, outcome: str) -> None:
    for progress in ("initiated", "ringing", "in-progress"):
        resp = await hooks.post(f"{STATUS}?attempt=7", hooks.status_params(progress))
        assert resp.status == 204
    assert hooks.results.seen == []
    resp = await hooks.post(f"{STATUS}?attempt=7", hooks.status_params(status))
    assert resp.status == 204
    assert hooks.results.seen == [(7, outcome, status)]
    # A duplicate callback reports nothing new.
    assert (await hooks.post(f"{STATUS}?attempt=7", hooks.status_params(status))).status == 204
    assert hooks.results.seen == [(7, outcome, status)]


async def test_status_of_another_call_is_not_this_attempts_news(hooks: Hooks) -> None:
    other = "CA" + "f" * 32
    resp = await hooks.post(f"{STATUS}?attempt=7", hooks.status_params("no-answer", sid=other))
    assert resp.status == 204
    assert hooks.results.seen == []


async def test_forged_signature_is_refused_and_logged(hooks: Hooks) -> None:
    with capture_logs() as logs:
        resp = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"), token="guessed-token")
    assert resp.status == 403
    assert resp.content_type == "application/json"
    assert await resp.json() == {"error": "invalid twilio signature"}
    assert hooks.results.seen == []
    rejected = [e for e in logs if e["event"] == "twilio.signature_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["log_level"] == "warning"
    assert rejected[0]["reason"] == "invalid"
    assert rejected[0]["url"] == f"{PUBLIC_URL}/api/twilio/gather?attempt=7"
    assert hooks.fake.auth_token not in repr(logs)


async def test_missing_signature_is_refused(hooks: Hooks) -> None:
    with capture_logs() as logs:
        resp = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"), signature="")
        status = await hooks.post(f"{STATUS}?attempt=7", hooks.status_params("no-answer"), signature="")
    assert resp.status == status.status == 403
    assert hooks.results.seen == []
    assert [e["reason"] for e in logs if e["event"] == "twilio.signature_rejected"] == ["missing", "missing"]


async def test_signature_binds_the_params_the_attempt_and_the_public_url(hooks: Hooks) -> None:
    path = f"{GATHER}?attempt=7"
    # Signed for key 2, sent with key 1.
    sig = sign(PUBLIC_URL + path, hooks.gather_params("2"), hooks.fake.auth_token)
    assert (await hooks.post(path, hooks.gather_params("1"), signature=sig)).status == 403
    # Signed for attempt 8, replayed against attempt 7.
    sig = sign(f"{PUBLIC_URL}{GATHER}?attempt=8", hooks.gather_params("1"), hooks.fake.auth_token)
    assert (await hooks.post(path, hooks.gather_params("1"), signature=sig)).status == 403
    # Signed over the URL the request really reached (our host, as a proxy would forward it): the
    # public URL Twilio was given is what counts, not the Host header.
    own = str(hooks.client.make_url(path))
    assert (await hooks.post(path, hooks.gather_params("1"), signed_url=own)).status == 403
    # A signed status callback cannot be replayed on the gather webhook.
    sig = sign(f"{PUBLIC_URL}{STATUS}?attempt=7", hooks.gather_params("1"), hooks.fake.auth_token)
    assert (await hooks.post(path, hooks.gather_params("1"), signature=sig)).status == 403
    assert hooks.results.seen == []


async def test_signed_status_no_answer(hooks: Hooks) -> None:
    resp = await hooks.post(f"{STATUS}?attempt=7", hooks.status_params("no-answer"))
    assert resp.status == 204
    assert hooks.results.seen == [(7, "no_answer", "no-answer")]


async def test_bad_attempt_parameter_is_a_400_after_the_signature(hooks: Hooks) -> None:
    for query in ("", "?attempt=", "?attempt=abc", "?attempt=-1", "?attempt=%D9%A3"):
        resp = await hooks.post(f"{STATUS}{query}", hooks.status_params("no-answer"))
        assert resp.status == 400, query
        forged = await hooks.post(f"{STATUS}{query}", hooks.status_params("no-answer"), token="nope")
        assert forged.status == 403, query
    assert hooks.results.seen == []


async def test_webhooks_need_no_session_but_everything_else_stays_protected(hooks: Hooks) -> None:
    assert {"/api/twilio/status", "/api/twilio/gather"} <= PUBLIC_POST_PATHS
    # The inbound-SMS webhook is signature-checked too; /aml has its secret/allowlist (test_location.py).
    assert (
        frozenset(
            {
                "/api/login",
                "/api/twilio/status",
                "/api/twilio/gather",
                "/api/twilio/message-status",
                "/api/twilio/sms",
                "/aml",
            }
        )
        == PUBLIC_POST_PATHS
    )
    # No cookie, no CSRF token: the signature is enough.
    assert not hooks.client.session.cookie_jar.filter_cookies(hooks.client.make_url("/"))
    assert (await hooks.post(f"{STATUS}?attempt=7", hooks.status_params("ringing"))).status == 204
    # Other state-changing routes still refuse anonymous requests ...
    assert (await hooks.client.post("/api/logout")).status == 401
    assert (await hooks.client.post("/api/users", json={})).status == 401
    # ... and logged-in ones without the CSRF token, even when a Twilio signature is attached.
    await make_user(hooks.client.app[STORE], "root", "admin")
    csrf = await login(hooks.client, "root")
    sig = sign(PUBLIC_URL + "/api/users", {}, hooks.fake.auth_token)
    resp = await hooks.client.post("/api/users", json={}, headers={"X-Twilio-Signature": sig})
    assert resp.status == 403
    assert await resp.json() == {"error": "csrf token missing or wrong"}
    assert (await hooks.client.patch("/api/me", json={"language": "en"}, headers={"X-CSRF-Token": csrf})).status == 200
    # A browser session does not stand in for the signature on the webhooks either.
    headers = {"X-CSRF-Token": csrf}
    forged = await hooks.post(f"{GATHER}?attempt=7", hooks.gather_params("1"), signature="", headers=headers)
    assert forged.status == 403
    assert hooks.results.seen == []


async def test_without_a_twilio_line_the_webhooks_answer_503(fake: FakeTwilio) -> None:
    # The composition root always puts a line there; the handlers must still not crash without one.
    from callcenter.web import twilio_hooks

    app = web.Application()
    app.add_routes(twilio_hooks.routes)
    async with TestClient(TestServer(app)) as client:
        params = {"CallSid": "CA" + "0" * 32, "CallStatus": "no-answer"}
        for path in (f"{STATUS}?attempt=7", f"{GATHER}?attempt=7"):
            sig = sign(PUBLIC_URL + path, params, fake.auth_token)
            resp = await client.post(path, data=params, headers={"X-Twilio-Signature": sig})
            assert resp.status == 503, path


async def test_an_empty_auth_token_never_validates(tmp_path: Path, fake: FakeTwilio, results: Results) -> None:
    """With no token configured, a signature made with the empty key must not pass."""
    cfg = replace(test_config(tmp_path), twilio={**twilio_config(fake, auth_token="").__dict__})
    app = create_app(cfg)
    app[TWILIO] = TwilioLine(cfg.twilio, results)
    async with TestClient(TestServer(app)) as client:
        path = f"{STATUS}?attempt=7"
        params = {"CallSid": "CA" + "0" * 32, "CallStatus": "no-answer"}
        resp = await client.post(path, data=params, headers={"X-Twilio-Signature": sign(PUBLIC_URL + path, params, "")})
        assert resp.status == 503
    assert results.seen == []


def test_openapi_fragment_describes_the_webhooks() -> None:
    from callcenter.web import twilio_hooks
    from callcenter.web.openapi import FRAGMENTS, build_spec

    fragment = json.loads((FRAGMENTS / "twilio.json").read_text(encoding="utf-8"))
    served = {(r.path, r.method.lower()) for r in twilio_hooks.routes if isinstance(r, web.RouteDef)}
    described = {(path, method) for path, ops in fragment["paths"].items() for method in ops}
    assert served == described == {(STATUS, "post"), (GATHER, "post"), ("/api/twilio/message-status", "post")}
    spec = build_spec()
    for path, method in served:
        op = spec["paths"][path][method]
        assert op["security"] == [], "the webhooks take no session"
        assert any(p["name"] == "X-Twilio-Signature" and p["in"] == "header" for p in op["parameters"])
        assert "403" in op["responses"]


# -- a key pressed after the attempt was over, on the app's own line and dispatcher ------------------------


@pytest.mark.parametrize("attempts_per_line", [2, 1])
async def test_late_key_1_is_stored_before_the_officer_hears_accepted(
    tmp_path: Path, fake: FakeTwilio, attempts_per_line: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BNN's only line is an E.164 number. The officer listens past the dispatcher's window for the
    attempt (it gives up and rings the line again — 2 attempts a line — or, with 1 attempt a line, the
    dispatch fails), then presses 1 on that first call. The officer is told "diterima" only because the
    acceptance is stored: the dispatch is accepted by that line and the calling stops."""
    from callcenter.dispatch import attempts as attempts_module
    from callcenter.store.incidents import Incidents
    from callcenter.store.models import Dispatch, DispatchAttempt
    from callcenter.testing.wait import until
    from callcenter.web.keys import DISPATCHER

    packaged = Path(__file__).resolve().parents[2] / "config" / "agencies.toml"
    agencies = tmp_path / "agencies.toml"
    text = packaged.read_text(encoding="utf-8")
    bnn_block = text.index("[agencies.bnn]")
    agencies.write_text(text[:bnn_block] + text[bnn_block:].replace("answer_timeout = 25", "answer_timeout = 1", 1))
    # The attempt's window: ring 1 s + accept 1 s, no slack (90 s in production).
    monkeypatch.setattr(attempts_module, "ATTEMPT_SLACK", 0.0)
    cfg = replace(
        test_config(tmp_path),
        twilio={**twilio_config(fake).__dict__},
        dispatch={"attempts_per_line": attempts_per_line, "accept_timeout": 1, "agencies_file": str(agencies)},
    )
    app = create_app(cfg)  # the app builds its own Twilio line, wired to its dispatcher
    async with TestClient(TestServer(app)) as client:
        store = app[STORE]
        incident = await Incidents(store).create(
            {
                "reporter_name": "Made",
                "callback_number": "+6281234567890",
                "address": "Jl. Udayana 5",
                "category": "crime",
                "priority": "high",
                "victims_count": 0,
                "victims_condition": "",
                "access_route": "",
            },
            call_id=None,
            user_id=None,
        )
        [dispatch] = await app[DISPATCHER].dispatch(incident.id, ["bnn"], user_id=None)
        await until(lambda: len(fake.calls()) >= 1, timeout=5, what="first Twilio call")
        first = fake.calls()[0]
        bnn = "+6236541204"
        assert first.param("To") == bnn
        attempt = int(first.param("StatusCallback").rsplit("=", 1)[1])

        async def row(model: type[Any], key: int) -> Any:
            async def op(session: Any) -> Any:
                return await session.get(model, key)

            return await store.transaction("t", op)

        async def attempt_over() -> bool:
            return bool((await row(DispatchAttempt, attempt)).outcome)

        await until(attempt_over, timeout=10, what="the dispatcher gave up on the first attempt")
        if attempts_per_line == 1:

            async def failed() -> bool:
                return str((await row(Dispatch, dispatch.id)).status) == "failed"

            await until(failed, timeout=5, what="dispatch failed")
        else:
            await until(lambda: len(fake.calls()) >= 2, timeout=5, what="the line rung again")

        # The officer, still on the first call, presses 1.
        path = f"{GATHER}?attempt={attempt}"
        data = {
            "AccountSid": fake.account_sid,
            "CallSid": app[TWILIO]._calls[attempt].sid or "",
            "CallStatus": "in-progress",
            "Digits": "1",
            "Direction": "outbound-api",
            "From": FROM,
            "To": bnn,
        }
        signature = sign(PUBLIC_URL + path, data, fake.auth_token)
        resp = await client.post(path, data=data, headers={"X-Twilio-Signature": signature})
        assert resp.status == 200
        said = parse_twiml(await resp.text())[0].text or ""
        assert "diterima" in said, said
        accepted = await row(Dispatch, dispatch.id)
        assert (accepted.status, accepted.accepted_line, accepted.accepted_via) == ("accepted", bnn, "twilio")
        await until(lambda: app[DISPATCHER].active == 0, timeout=5, what="the calling stopped")
