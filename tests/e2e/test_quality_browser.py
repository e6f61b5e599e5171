"""End-to-end in Chromium: the quality review of a call, from the weekly sample to the call-taker's
acknowledgement, against the app as a child process (SQLite; no PBX needed: the calls are seeded, and
the recording is a WAV file where Asterisk would have written it).

A supervisor draws the week's sample, opens a sampled call, listens to its recording (one access-log
row per fetch, as for any listening) and scores it with the form under the player, a critical deviation
included; a second supervisor reviews the same call on their own and sees the difference; the
call-taker reads the review in the console and acknowledges it; the scores show in statistics.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import Store, utcnow
from callcenter.store.models import AccessLog, Call, Draft, QualityReview
from callcenter.testing import sipp
from callcenter.testing.app import AppProcess
from callcenter.testing.browser import log_in, rows
from callcenter.testing.web import make_user

RECORDED = "qa-rec"


def write_wav(path: Path, seconds: float = 3.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        frames = int(8000 * seconds)
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(i / 8000 * 2 * math.pi * 440))) for i in range(frames))
        )


@pytest.fixture
async def qa_app(tmp_path: Path) -> AsyncIterator[tuple[AppProcess, Store]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"
    root = tmp_path / "root"
    write_wav(root / "rec" / f"{RECORDED}.wav")
    store = Store.from_url(url, retry_for=5)
    await store.upgrade()
    for name in ("sari", "tono"):
        await make_user(store, name, "supervisor")
    await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
    now = utcnow()

    async def seed(session: AsyncSession) -> None:
        for i, cid in enumerate((RECORDED, "qa-2", "qa-3")):
            at = now - timedelta(minutes=30 - i)
            session.add(
                Call(
                    id=cid,
                    uniqueid=f"u-{cid}",
                    routed_by="agi",
                    status="completed",
                    arrived_at=at,
                    answered_at=at + timedelta(seconds=4),
                    ended_at=at + timedelta(seconds=60),
                    wait_seconds=4.0,
                    talk_seconds=56.0,
                    answered_by="PJSIP/taker1",
                    caller_number=f"+6281234567{i:03d}",
                    recording=f"/rec/{RECORDED}.wav" if cid == RECORDED else None,
                )
            )
        at = now - timedelta(minutes=10)
        session.add(
            Call(
                id="qa-gone",
                uniqueid="u-qa-gone",
                routed_by="agi",
                status="abandoned",
                arrived_at=at,
                ended_at=at + timedelta(seconds=9),
            )
        )

    await store.transaction("seed", seed)
    env = {
        "CALLCENTER_STORE_URL": url,
        "CALLCENTER_AGI_PORT": str(sipp.free_port("tcp")),
        "CALLCENTER_AMI_PORT": str(sipp.free_port("tcp")),  # nothing listens: AMI keeps retrying quietly
        "CALLCENTER_QUEUE_RECORD_DIR": "/rec",
        "CALLCENTER_SUPERVISION_RECORDINGS_ROOT": str(root),
    }
    app = AppProcess(env, tmp_path / "app.log", sipp.free_port("tcp"))
    try:
        await app.start(wait_ami=False)
        yield app, store
    finally:
        await app.stop()
        await store.close()


async def logged_in(browser: Browser, base_url: str, username: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=base_url)
    page = await context.new_page()
    await log_in(page, base_url, username)
    return context, page


async def open_sampled_call(page: Page, base_url: str, call_id: str) -> None:
    await page.goto(base_url + "/supervisor#quality")
    row = page.locator(f'[data-testid="q-sample-row"][data-call-id="{call_id}"]')
    await row.click()
    await expect(page.get_by_test_id("detail-panel")).to_contain_text(call_id)


async def test_review_calibrate_and_acknowledge(qa_app: tuple[AppProcess, Store], browser: Browser) -> None:
    app, store = qa_app
    sari, page = await logged_in(browser, app.base_url, "sari")
    try:
        # 1. The week's sample: three answered calls, all drawn (a small week: fewer than the floor of 10).
        await page.goto(app.base_url + "/supervisor#quality")
        await expect(page.get_by_test_id("q-week")).not_to_have_value("")
        await expect(page.get_by_test_id("q-sample-table").locator("tbody tr")).to_contain_text("Belum ada")
        await page.get_by_test_id("q-draw").click()
        await expect(page.get_by_test_id("q-draw-result")).to_contain_text("3")
        sample_rows = page.get_by_test_id("q-sample-row")
        await expect(sample_rows).to_have_count(3)
        await expect(sample_rows.first.get_by_test_id("q-status")).to_have_text("Belum ditinjau")
        assert await page.locator('[data-call-id="qa-gone"]').count() == 0

        # 2. The sampled call opens beside its recording; listening is access-logged, opening is not.
        await open_sampled_call(page, app.base_url, RECORDED)
        detail = page.get_by_test_id("detail-panel")
        audio = detail.get_by_test_id("detail-audio")
        await expect(audio).to_be_visible()
        await expect(detail.get_by_test_id("q-form")).to_be_visible()
        assert await rows(store, AccessLog) == []
        duration = await audio.evaluate(
            """el => new Promise((resolve) => {
                el.addEventListener("loadedmetadata", () => resolve(el.duration), { once: true });
                el.addEventListener("error", () => resolve(-1), { once: true });
                el.preload = "metadata"; el.load();
            })"""
        )
        assert duration >= 2.9, duration
        plays = await rows(store, AccessLog, AccessLog.subject_id == RECORDED)
        assert plays and {p.action for p in plays} == {"play_recording"}

        # 3. The review: an unfilled section is refused in the page; the preview follows the weights.
        form = detail.get_by_test_id("q-form")
        await form.get_by_test_id("q-submit").click()
        await expect(detail.get_by_test_id("q-error")).to_be_visible()
        for code, level in (
            ("greeting", "4"),
            ("location", "2"),
            ("key_questions", "4"),
            ("intake", "3"),
            ("agencies", "na"),
            ("care", "4"),
        ):
            await form.get_by_test_id(f"q-level-{code}").select_option(level)
        await form.get_by_test_id("q-dev-location").select_option("critical")
        await form.get_by_test_id("q-comment").fill("Alamat tidak diulang kepada penelepon.")
        await expect(form.get_by_test_id("q-score-preview")).to_have_text("79,4")
        await form.get_by_test_id("q-submit").click()
        primary = detail.get_by_test_id("q-review-primary")
        await expect(primary.get_by_test_id("q-review-score")).to_have_text("79,4 / 100")
        await expect(primary.get_by_test_id("q-review-critical")).to_be_visible()
        await expect(detail.get_by_test_id("q-form")).to_have_count(0)  # one review per supervisor
        await expect(detail.get_by_test_id("q-sample").get_by_test_id("q-status")).to_have_text("Ditinjau")

        # 4. A second supervisor calibrates on the same call; the difference is shown.
        tono, tpage = await logged_in(browser, app.base_url, "tono")
        try:
            await open_sampled_call(tpage, app.base_url, RECORDED)
            tdetail = tpage.get_by_test_id("detail-panel")
            tform = tdetail.get_by_test_id("q-form")
            await expect(tform).to_contain_text("Kalibrasi")
            # Blind: the first review's score and the difference show only after tono's own review.
            await expect(tdetail.get_by_test_id("q-blind")).to_be_visible()
            await expect(tdetail.get_by_test_id("q-review-primary")).to_have_count(0)
            await expect(tdetail).not_to_contain_text("79,4")
            for code in ("greeting", "location", "key_questions", "intake", "agencies", "care"):
                await tform.get_by_test_id(f"q-level-{code}").select_option("4")
            await tform.get_by_test_id("q-submit").click()
            calibration = tpage.get_by_test_id("q-calibration")
            await expect(calibration.get_by_test_id("q-calibration-diff")).to_have_text("+20,6")
            await expect(calibration).to_contain_text("Lokasi diverifikasi +2")
            await expect(tdetail.get_by_test_id("q-blind")).to_have_count(0)
        finally:
            await tono.close()

        # 5. The call-taker reads the primary review in the console and acknowledges it.
        ayu, apage = await logged_in(browser, app.base_url, "ayu")
        try:
            panel = apage.get_by_test_id("quality-panel")
            await expect(panel).to_be_visible()
            await expect(apage.get_by_test_id("quality-count")).to_have_text("1")
            await apage.get_by_test_id("quality-toggle").click()
            review = panel.get_by_test_id("q-mine")
            await expect(review).to_have_count(1)  # the calibration review is not the call-taker's
            await expect(review).to_contain_text("Alamat tidak diulang kepada penelepon.")
            await expect(review.get_by_test_id("q-review-score")).to_have_text("79,4 / 100")
            review_id = await review.get_attribute("data-review-id")
            # The call-taker hears their call with the review; that listening is in the access log too.
            await expect(review.get_by_test_id("q-mine-audio")).to_be_visible()
            heard = await apage.request.get(f"/api/quality/reviews/{review_id}/recording")
            assert heard.status == 200 and heard.headers["content-type"].startswith("audio/wav")
            ayu_plays = await rows(
                store,
                AccessLog,
                AccessLog.subject_id == RECORDED,
                AccessLog.detail["via"].as_string() == "quality_review",
            )
            assert len(ayu_plays) == 1 and ayu_plays[0].detail["username"] == "ayu"
            assert (await apage.request.get("/api/quality/reviews/999/recording")).status == 404
            await panel.get_by_test_id(f"q-ack-{review_id}").click()
            await expect(panel.get_by_test_id(f"q-acked-{review_id}")).to_be_visible()
            await expect(apage.get_by_test_id("quality-count")).to_be_hidden()
        finally:
            await ayu.close()
        (stored,) = await rows(store, QualityReview, QualityReview.id == int(review_id or 0))
        assert stored.acknowledged_at is not None and stored.score == 79.4 and stored.critical

        # 6. The supervisor sees it acknowledged, and the score per call-taker in statistics (with CSV).
        await page.get_by_test_id("tab-quality").click()
        row = page.locator(f'[data-testid="q-sample-row"][data-call-id="{RECORDED}"]')
        await expect(row).to_have_attribute("data-status", "acknowledged")
        await expect(row).to_contain_text("+20,6")
        await page.get_by_test_id("tab-stats").click()
        score_row = page.get_by_test_id("stats-quality-table").get_by_test_id("q-score-row")
        await expect(score_row).to_have_count(1)
        await expect(score_row).to_contain_text("Ayu")
        await expect(score_row).to_contain_text("79,4")
        href = await page.get_by_test_id("stats-csv-quality").get_attribute("href")
        assert href
        csv = await page.request.get(href)
        assert csv.status == 200 and "Ayu" in await csv.text() and "79.4" in await csv.text()
    finally:
        await sari.close()


async def test_a_half_typed_review_survives_a_reload_and_another_desk(
    qa_app: tuple[AppProcess, Store], browser: Browser
) -> None:
    """Non-negotiable 3 for the review form: what the reviewer typed comes back after a reload (this
    device's copy) and on another workstation (the server's copy), and goes once the review is submitted."""
    app, store = qa_app
    sari, page = await logged_in(browser, app.base_url, "sari")
    try:
        await page.goto(app.base_url + "/supervisor#quality")
        await page.get_by_test_id("q-draw").click()
        await expect(page.get_by_test_id("q-sample-row")).to_have_count(3)
        await open_sampled_call(page, app.base_url, "qa-2")
        form = page.get_by_test_id("detail-panel").get_by_test_id("q-form")
        await form.get_by_test_id("q-level-greeting").select_option("3")
        await form.get_by_test_id("q-level-agencies").select_option("na")
        await form.get_by_test_id("q-dev-location").select_option("major")
        comment = "Penelepon tidak ditanya patokan terdekat."
        await form.get_by_test_id("q-comment").fill(comment)
        await expect(form.get_by_test_id("q-draft-status")).to_contain_text("Tersimpan di server")
        (draft,) = await rows(store, Draft)
        assert draft.call_key == "review.qa-2" and draft.data["comment"] == comment

        # A reload reopens the call with the form as it was typed.
        await page.reload()
        form = page.get_by_test_id("detail-panel").get_by_test_id("q-form")
        await expect(form.get_by_test_id("q-comment")).to_have_value(comment)
        await expect(form.get_by_test_id("q-level-greeting")).to_have_value("3")
        await expect(form.get_by_test_id("q-level-agencies")).to_have_value("na")
        await expect(form.get_by_test_id("q-dev-location")).to_have_value("major")
        await expect(form.get_by_test_id("q-draft-status")).to_have_text("Draf dipulihkan")

        # Another desk (nothing on that device) gets the server's copy.
        desk, other = await logged_in(browser, app.base_url, "sari")
        try:
            await open_sampled_call(other, app.base_url, "qa-2")
            oform = other.get_by_test_id("detail-panel").get_by_test_id("q-form")
            await expect(oform.get_by_test_id("q-comment")).to_have_value(comment)
            await expect(oform.get_by_test_id("q-level-greeting")).to_have_value("3")
        finally:
            await desk.close()

        # Submitted, the draft is gone from both places.
        for code in ("location", "key_questions", "intake", "care"):
            await form.get_by_test_id(f"q-level-{code}").select_option("4")
        await form.get_by_test_id("q-submit").click()
        primary = page.get_by_test_id("detail-panel").get_by_test_id("q-review-primary")
        await expect(primary).to_contain_text(comment)
        assert await rows(store, Draft) == []
        kept = await page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('cc112.draft.'))")
        assert kept == []
    finally:
        await sari.close()
