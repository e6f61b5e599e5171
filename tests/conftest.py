"""Shared pytest fixtures.

Only the standard library and modules that exist are imported at module level; the PBX
fixtures import the harness lazily so unit tests run on machines without the chroot.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from callcenter.pbx.harness import TestPbx
    from callcenter.testing.postgres import ThrowawayPostgres

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL server for the whole session; tests get their own database on it."""
    from callcenter.testing.postgres import ThrowawayPostgres

    with ThrowawayPostgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def pbx_chroot() -> Path:
    """The Asterisk chroot, built on first use (minutes, once per machine; then instant)."""
    if os.geteuid() != 0:
        pytest.skip("the test PBX needs root (chroot, mount)")
    from callcenter.pbx.chroot import default_cache_dir, ensure_chroot

    return ensure_chroot(default_cache_dir(), progress=lambda line: print(f"[chroot] {line}", flush=True))


@pytest.fixture(scope="session")
def pbx_ports() -> dict[str, int]:
    """Free loopback ports for one session's PBX and its SIPp phones."""
    from callcenter.testing.sipp import free_port

    ports: dict[str, int] = {}
    for name in ("sip", "taker1", "taker2", "supervisor", "police", "damkar", "damkar-backup", "ambulans", "citizen"):
        while True:
            port = free_port("udp")
            if port not in ports.values():
                ports[name] = port
                break
    ports["ami"] = free_port("tcp")
    ports["agi"] = free_port("tcp")
    # A second app node's FastAGI (the two-node tests, tests/e2e/test_nodes_chaos.py).
    while (agi2 := free_port("tcp")) in (ports["ami"], ports["agi"]):
        pass
    ports["agi2"] = agi2
    return ports


@pytest.fixture(scope="session")
def pbx(pbx_chroot: Path, pbx_ports: dict[str, int], repo_root: Path) -> Iterator[TestPbx]:
    """One Asterisk for the whole session, wired to SIPp phones on the ``pbx_ports``.

    ``taker1`` is a static queue member; the AGI URL points at ``pbx_ports["agi"]`` where
    nothing listens unless a test starts a server there. Short queue timeout (3 s) so overflow
    tests stay fast.
    """
    from callcenter.pbx.harness import TestPbx
    from callcenter.pbx.render import PbxSpec

    spec = PbxSpec(
        instance=f"pytest{os.getpid()}",
        sip_port=pbx_ports["sip"],
        ami_port=pbx_ports["ami"],
        ami_username="callcenter",
        ami_secret="pytest-secret",
        agi_url=f"agi://127.0.0.1:{pbx_ports['agi']}",
        # Rendered into CC_AGI_URL; pbx_env hands the same value to the app (CALLCENTER_AGI_SECRET).
        agi_secret=secrets.token_urlsafe(24),
        # A second app node's FastAGI, tried when the first refuses (tests/e2e/test_nodes_chaos.py).
        agi_fallbacks=(f"agi://127.0.0.1:{pbx_ports['agi2']}",),
        queue_timeout=3,
        member_timeout=15,
        overflow_timeout=15,
        takers=(("taker1", pbx_ports["taker1"]), ("taker2", pbx_ports["taker2"])),
        # Duty lines for the dispatch tests: a line with a backup, and a second agency to run in parallel.
        agencies=tuple((name, pbx_ports[name]) for name in ("police", "damkar", "damkar-backup", "ambulans")),
        supervisor_port=pbx_ports["supervisor"],
        # The public network as seen by call-backs and rating calls: every citizen number reaches the
        # SIPp UAS on this port.
        citizens=(("citizen", pbx_ports["citizen"]),),
        citizen_trunk="citizen",
        static_members=("taker1",),
    )
    instance = TestPbx(spec, pbx_chroot, repo_root)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        # Per-pid instance dirs would pile up in the cached chroot otherwise.
        shutil.rmtree(instance.host_dir, ignore_errors=True)
