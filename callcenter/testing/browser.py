"""Steps that several Chromium end-to-end tests take the same way (tests/e2e)."""

from __future__ import annotations

import contextlib
import re
import wave
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import FilePayload, Page, expect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.pbx.harness import TestPbx
from callcenter.store import Store
from callcenter.store.models import Callback
from callcenter.testing import sipp
from callcenter.testing.fake_twilio import FakeTwilio
from callcenter.testing.web import DEFAULT_PASSWORD

__all__ = [
    "call_back_from_page",
    "citizen_call",
    "greeting_seconds",
    "log_in",
    "phone_port",
    "report_from_lapor",
    "rows",
]


def dead_tiles() -> str:
    """A map tile template (``CALLCENTER_WEB_MAP_TILES``) on a loopback port nothing listens on: every
    tile fails at once, as on a centre's closed network without a tile server."""
    return f"http://127.0.0.1:{sipp.free_port('tcp')}/{{z}}/{{x}}/{{y}}.png"


async def log_in(page: Page, base_url: str, username: str) -> None:
    """Log in on the console's login form as ``username`` (the test password) and check it succeeded."""
    await page.goto(base_url + "/")
    await page.get_by_test_id("login-username").fill(username)
    await page.get_by_test_id("login-password").fill(DEFAULT_PASSWORD)
    async with page.expect_response(lambda r: r.url.endswith("/api/login")) as login:
        await page.get_by_test_id("login-submit").click()
    assert (await login.value).status == 200


def phone_port(pbx: TestPbx, name: str) -> int:
    """The SIP port of a call-taker's or citizen's test phone on ``pbx``."""
    return dict(pbx.spec.takers + pbx.spec.citizens)[name]


async def rows(store: Store, model: Any, *where: Any) -> list[Any]:
    """Every ``model`` row matching ``where``, read in one transaction (what a test checks was stored)."""

    async def op(session: AsyncSession) -> list[Any]:
        return list(await session.scalars(select(model).where(*where)))

    return await store.transaction("test_rows", op)


async def call_back_from_page(
    page: Page, pbx: TestPbx, store: Store, call_id: str, requester: sipp.SippProcess, phones: list[sipp.SippProcess]
) -> Callback:
    """Click the abandoned call's call-back button: the requester's phone (a running SIPp answerer that
    the far end hangs up) rings first, then the citizen's line answers. Checks the button cannot dial
    twice, the live outcome on the page, one call at each phone, and returns the stored call-back."""
    citizen = await sipp.answerer(phone_port(pbx, "citizen"), answer_after=0.5, hangup_by="local", hold_seconds=2)
    phones.append(citizen)
    status = page.get_by_test_id(f"callback-status-{call_id}")
    button = page.get_by_test_id(f"abandoned-callback-{call_id}")
    await button.click()
    await expect(button).to_be_disabled()  # no second dial while this one rings
    await expect(status).to_have_class(re.compile(r"\bcb-answered\b"), timeout=30_000)
    await expect(status).to_contain_text("Tersambung")
    citizen_res = await citizen.wait(timeout=30)
    await pbx.await_idle()
    requester_res = await requester.stop()
    assert citizen_res.incoming == 1, citizen_res.errors
    assert requester_res.incoming == 1, requester_res.errors
    (callback,) = await rows(store, Callback, Callback.call_id == call_id)
    assert isinstance(callback, Callback)
    return callback


def greeting_seconds(pbx: TestPbx) -> float:
    """Length of the greeting every 112 caller hears before the queue."""
    with wave.open(str(pbx.repo_root / "sounds" / "cc-greeting.wav")) as w:
        frames: int = w.getnframes()
        rate: int = w.getframerate()
    return frames / rate


@contextlib.asynccontextmanager
async def citizen_call(pbx: TestPbx, caller_id: str, talk: float) -> AsyncIterator[sipp.SippProcess]:
    """A citizen on the line to taker1's (auto-answering) softphone for ``talk`` seconds after the greeting."""
    taker = await sipp.answerer(dict(pbx.spec.takers)["taker1"], answer_after=0.3, hangup_by="remote", max_calls=None)
    caller = await sipp.caller(
        f"127.0.0.1:{pbx.spec.sip_port}",
        "112",
        caller_id=caller_id,
        hold_seconds=greeting_seconds(pbx) + 1.5 + talk,
        timeout=120,
    )
    try:
        yield caller
        res = await caller.wait()
        assert res.ok, (res.errors, pbx.log_tail())
        await pbx.await_idle()
    finally:
        caller.kill()
        result = await taker.stop()
    assert result.successful >= 1, result.errors


async def report_from_lapor(
    page: Page, base_url: str, fake_twilio: FakeTwilio, typed: str, category: str, *, png: bytes | None = None
) -> int:
    """A citizen sends a report from ``/lapor`` in ``page`` (a context with geolocation granted): the number
    ``typed``, verified with the code read from Twilio's recorder, then (with the photo ``png`` chosen, if
    given) ``category`` held for the 3 s the app asks for, once the position is known. Returns the report's
    id as the confirmation shows it."""
    await page.goto(base_url + "/lapor/")
    await page.get_by_test_id("lapor-number").fill(typed)
    sent = len(fake_twilio.messages())
    await page.get_by_test_id("lapor-send-code").click()
    await expect(page.get_by_test_id("lapor-screen-code")).to_be_visible()
    body = fake_twilio.messages()[sent].param("Body")
    code = next(word for word in re.split(r"[^0-9]+", body) if len(word) == 6)
    await page.get_by_test_id("lapor-code").fill(code)
    await page.get_by_test_id("lapor-verify").click()
    await expect(page.get_by_test_id("lapor-location")).to_have_attribute("data-state", "fixed", timeout=10_000)
    if png is not None:
        photo: FilePayload = {"name": "foto.png", "mimeType": "image/png", "buffer": png}
        await page.get_by_test_id("lapor-photo").set_input_files(photo)
    button = page.get_by_test_id(f"lapor-cat-{category}")
    box = await button.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()
    await expect(page.get_by_test_id("lapor-done")).to_be_visible(timeout=10_000)  # sent after the 3 s hold
    await page.mouse.up()
    return int(await page.get_by_test_id("lapor-report-id").get_attribute("data-report-id") or "0")
