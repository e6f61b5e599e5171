"""Citizen ratings: a rating call that reaches nobody is followed by the SMS link, once.

The SMS goes through the real ``twilio`` client to the local recorder (:class:`FakeTwilio`), on a real
store (SQLite and PostgreSQL). The PBX side is what the ratings service sees of it: the answers to its
``Getvar``/``Originate`` actions (:class:`ScriptedAmi`) and the AMI events the app's fan-out hands it,
fed here in the order Asterisk sends them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from panoramisk.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from callcenter.app import create_app
from callcenter.config import AmiConfig, TwilioConfig, replace
from callcenter.dispatch.twilio_line import TwilioLine
from callcenter.queue.ami import AmiClient, AmiError
from callcenter.store import Store
from callcenter.store.incidents import Incidents
from callcenter.store.models import Rating
from callcenter.supervision.ratings import Ratings
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.web import SAMPLE_INTAKE, test_config
from callcenter.web.keys import TWILIO
from callcenter.wiring import sms_line

PUBLIC_URL = "https://cc112.jembrana.example.id"
MOBILE = "+6281234567890"
LANDLINE = "+6236541113"  # a Negara fixed line: it cannot receive an SMS


async def _no_events(_message: Message) -> None:
    raise AssertionError("never started: no events")


async def _no_ready(_client: AmiClient) -> None:
    raise AssertionError("never started: never ready")


class ScriptedAmi(AmiClient):
    """Answers the ratings service's AMI actions as Asterisk would: the citizen trunk, then the Originate.

    The real client's ``originate`` builds the actions; only sending them is scripted (never started).
    """

    def __init__(self, *, refuse_originate: bool = False) -> None:
        super().__init__(AmiConfig(), on_event=_no_events, on_ready=_no_ready)
        self.refuse_originate = refuse_originate
        self.actions: list[dict[str, str]] = []

    async def action(self, action: dict[str, str], **_kwargs: Any) -> Message:
        self.actions.append(action)
        if action["Action"] == "Getvar":
            return Message({"Response": "Success", "Variable": action["Variable"], "Value": "citizen"})
        if action["Action"] == "Originate" and self.refuse_originate:
            raise AmiError("Originate failed: Extension does not exist.")
        return Message({"Response": "Success", "Message": "Originate successfully queued"})


def publish_nowhere(message: dict[str, Any], *, roles: tuple[str, ...] = (), agency: str | None = None) -> None:
    """No consoles in these tests: what the live hub would broadcast goes nowhere."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as server:
        yield server


@pytest.fixture
async def line(fake: FakeTwilio) -> AsyncIterator[TwilioLine]:
    config = TwilioConfig(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number="+62365100112",
        public_url=PUBLIC_URL,
        api_base=fake.base_url,
    )

    async def no_dispatch(_attempt: int, _outcome: str, _reason: str) -> None:
        raise AssertionError("no dispatch attempt in these tests")

    tl = TwilioLine(config, no_dispatch)
    yield tl
    await tl.close()


Build = Callable[..., Awaitable[tuple[Ratings, ScriptedAmi]]]


@pytest.fixture
async def build(store: Store, line: TwilioLine) -> AsyncIterator[Build]:
    """A ratings service on the store, texting through ``line`` unless told Twilio cannot text."""
    made: list[Ratings] = []

    async def make(*, refuse_originate: bool = False, can_text: bool = True) -> tuple[Ratings, ScriptedAmi]:
        ami = ScriptedAmi(refuse_originate=refuse_originate)
        ratings = Ratings(
            store,
            ami,
            publish_nowhere,
            lambda: line if can_text else None,
            public_url=PUBLIC_URL + "/",
        )
        made.append(ratings)
        return ratings, ami

    yield make
    for ratings in made:
        await ratings.close()


async def incident(store: Store, number: str = MOBILE) -> int:
    created = await Incidents(store).create({**SAMPLE_INTAKE, "callback_number": number}, call_id=None, user_id=None)
    return created.id


async def ask_by_ivr(ratings: Ratings, store: Store, number: str = MOBILE) -> tuple[int, Rating]:
    """A new incident and its rating call, ringing."""
    incident_id = await incident(store, number)
    ivr = await ratings.request(incident_id)
    assert (ivr.via, ivr.status) == ("ivr", "calling")
    return incident_id, ivr


async def ratings_of(store: Store, incident_id: int) -> list[Rating]:
    async def op(session: AsyncSession) -> list[Rating]:
        return list(await session.scalars(select(Rating).where(Rating.incident_id == incident_id).order_by(Rating.id)))

    return await store.transaction("t", op)


def originate_response(rating_id: int, response: str, reason: str) -> Message:
    return Message(
        {"Event": "OriginateResponse", "ActionID": f"rating-{rating_id}", "Response": response, "Reason": reason}
    )


def hangup(rating_id: int) -> Message:
    return Message({"Event": "Hangup", "Uniqueid": f"rating-{rating_id}", "Cause": "16"})


async def not_answered(ratings: Ratings, rating_id: int) -> None:
    await ratings.on_ami_event(originate_response(rating_id, "Failure", "3"))


async def busy(ratings: Ratings, rating_id: int) -> None:
    await ratings.on_ami_event(originate_response(rating_id, "Failure", "5"))


async def answered_without_a_key(ratings: Ratings, rating_id: int) -> None:
    await ratings.on_ami_event(originate_response(rating_id, "Success", "4"))
    await ratings.record_ivr(rating_id, None)  # the AGI route: no key in either round
    await ratings.on_ami_event(hangup(rating_id))


async def hung_up_before_a_key(ratings: Ratings, rating_id: int) -> None:
    await ratings.on_ami_event(originate_response(rating_id, "Success", "4"))
    await ratings.on_ami_event(hangup(rating_id))


@pytest.mark.parametrize(
    ("ends", "ivr_status"),
    [
        (not_answered, "no_answer"),
        (busy, "no_answer"),
        (answered_without_a_key, "declined"),
        (hung_up_before_a_key, "declined"),
    ],
)
async def test_a_rating_call_that_gets_no_score_is_followed_by_one_sms_link(
    store: Store, fake: FakeTwilio, build: Build, ends: Callable[[Ratings, int], Awaitable[None]], ivr_status: str
) -> None:
    ratings, ami = await build()
    incident_id, ivr = await ask_by_ivr(ratings, store)
    assert [a["Action"] for a in ami.actions] == ["Getvar", "Originate"]

    await ends(ratings, ivr.id)
    # Asterisk repeats itself (a second Hangup, a late OriginateResponse): still one text.
    await ratings.on_ami_event(hangup(ivr.id))
    await not_answered(ratings, ivr.id)
    await ratings.settled()

    (sms,) = fake.messages()
    assert sms.param("To") == MOBILE
    match = re.search(rf"{re.escape(PUBLIC_URL)}/rate/([A-Za-z0-9_-]+)$", sms.param("Body"))
    assert match, sms.param("Body")
    first, second = await ratings_of(store, incident_id)
    assert (first.id, first.via, first.status, first.score) == (ivr.id, "ivr", ivr_status, None)
    assert (second.via, second.status, second.token) == ("sms", "calling", match.group(1))

    # The link works like any SMS rating: one score.
    assert await ratings.record_token(match.group(1), 5)
    assert not await ratings.record_token(match.group(1), 1)
    assert [(r.via, r.status, r.score) for r in await ratings_of(store, incident_id)] == [
        ("ivr", ivr_status, None),
        ("sms", "rated", 5),
    ]
    assert len(fake.messages()) == 1


async def test_a_refused_rating_call_is_followed_by_the_sms_link(store: Store, fake: FakeTwilio, build: Build) -> None:
    ratings, _ami = await build(refuse_originate=True)
    incident_id = await incident(store)
    ivr = await ratings.request(incident_id, "ivr")
    assert (ivr.via, ivr.status) == ("ivr", "failed")
    await ratings.settled()
    (sms,) = fake.messages()
    assert sms.param("To") == MOBILE and "/rate/" in sms.param("Body")
    assert [(r.via, r.status) for r in await ratings_of(store, incident_id)] == [("ivr", "failed"), ("sms", "calling")]


async def test_a_rated_call_is_not_followed_by_an_sms(store: Store, fake: FakeTwilio, build: Build) -> None:
    ratings, _ami = await build()
    incident_id, ivr = await ask_by_ivr(ratings, store)
    await ratings.on_ami_event(originate_response(ivr.id, "Success", "4"))
    assert await ratings.record_ivr(ivr.id, 4)
    await ratings.on_ami_event(hangup(ivr.id))
    await not_answered(ratings, ivr.id)
    await ratings.settled()
    assert fake.messages() == []
    assert [(r.via, r.status, r.score) for r in await ratings_of(store, incident_id)] == [("ivr", "rated", 4)]


async def test_an_incident_is_texted_once_even_when_asked_by_ivr_again(
    store: Store, fake: FakeTwilio, build: Build
) -> None:
    ratings, _ami = await build()
    incident_id, first = await ask_by_ivr(ratings, store)
    await not_answered(ratings, first.id)
    await ratings.settled()
    # A supervisor asks again by IVR; that call is missed too.
    again = await ratings.request(incident_id, "ivr")
    with capture_logs() as logs:
        await not_answered(ratings, again.id)
        await ratings.settled()
    assert len(fake.messages()) == 1
    assert [(r.via, r.status) for r in await ratings_of(store, incident_id)] == [
        ("ivr", "no_answer"),
        ("sms", "calling"),
        ("ivr", "no_answer"),
    ]
    assert [e["reason"] for e in logs if e["event"] == "rating.sms_fallback_skipped"] == ["texted"]


@pytest.mark.parametrize(
    ("number", "can_text", "reason"),
    [
        (LANDLINE, True, "no mobile number"),
        (MOBILE, False, "Twilio cannot text (credentials, sender number or public URL unset)"),
    ],
)
async def test_no_sms_to_a_landline_or_without_twilio(
    store: Store, fake: FakeTwilio, build: Build, number: str, can_text: bool, reason: str
) -> None:
    ratings, _ami = await build(can_text=can_text)
    incident_id, ivr = await ask_by_ivr(ratings, store, number)
    with capture_logs() as logs:
        await not_answered(ratings, ivr.id)
        await ratings.settled()
    assert fake.requests == []
    assert [(r.via, r.status) for r in await ratings_of(store, incident_id)] == [("ivr", "no_answer")]
    (skipped,) = [e for e in logs if e["event"] == "rating.sms_fallback_skipped"]
    assert (skipped["rating_id"], skipped["reason"]) == (ivr.id, reason)


async def test_a_text_twilio_refuses_is_recorded_as_failed_and_not_retried(
    store: Store, fake: FakeTwilio, build: Build
) -> None:
    ratings, _ami = await build()
    incident_id, ivr = await ask_by_ivr(ratings, store)
    fake.fail_next()
    await not_answered(ratings, ivr.id)
    await ratings.on_ami_event(hangup(ivr.id))
    await ratings.settled()
    assert len(fake.messages()) == 1  # the one request Twilio refused
    found = [(r.via, r.status) for r in await ratings_of(store, incident_id)]
    assert found == [("ivr", "no_answer"), ("sms", "failed")]


async def test_sms_line_only_when_twilio_can_text(tmp_path: Path, fake: FakeTwilio) -> None:
    async def line_of(**twilio: str) -> tuple[object, object]:
        cfg = replace(test_config(tmp_path), twilio=twilio)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(create_app(cfg)))
        await client.start_server()
        try:
            return sms_line(client.app), client.app[TWILIO]
        finally:
            await client.close()

    found, _app_line = await line_of(account_sid=fake.account_sid, auth_token=fake.auth_token, public_url=PUBLIC_URL)
    assert found is None  # no sender number
    found, app_line = await line_of(
        account_sid=fake.account_sid, auth_token=fake.auth_token, from_number="+62365100112", public_url=PUBLIC_URL
    )
    assert found is app_line
