"""End-to-end fixtures shared by the browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from callcenter.testing.fake_twilio import FakeTwilio

#: Debian's chromium (scripts/setup.sh installs it); Playwright drives it without a browser download.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (scripts/setup.sh installs it)")
    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=CHROMIUM,
            # No sandbox as root; no background networking: this machine has no network to reach.
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu"],
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    """Twilio's local recorder: point an app at it with ``fake_twilio.app_env(public_url)``."""
    async with FakeTwilio() as fake:
        yield fake
