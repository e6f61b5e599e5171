"""A failed login's typed username (often a password typed into the wrong field) is not in the log."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from callcenter.app import create_app
from callcenter.logs import ref
from callcenter.testing.web import test_config

TYPED = "Rahasia-Ayu-2026"


async def test_failed_login_logs_a_reference_not_what_was_typed(tmp_path: Path) -> None:
    async with TestClient(TestServer(create_app(test_config(tmp_path)))) as client:
        with capture_logs() as logs:
            for _ in range(2):
                resp = await client.post("/api/login", json={"username": TYPED, "password": "x"})
                assert resp.status in (401, 429)
    failed = [e for e in logs if e["event"].startswith("auth.login")]
    assert failed and TYPED.lower() not in repr(logs).lower()
    assert {e["username_ref"] for e in failed} == {ref(TYPED.lower())}
