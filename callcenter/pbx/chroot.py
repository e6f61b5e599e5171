"""Build (once) and locate the Debian sid chroot that carries the test Asterisk.

Why a chroot: the host is Debian 12 without an ``asterisk`` package, and the tests must run
against a real Asterisk 22, not a mock. ``debootstrap`` of sid gives us exactly that from the
ordinary Debian mirror, and the result is cached so only the first run pays for the download.

The build goes into ``<dir>.tmp`` and is renamed into place only when complete, under an
``fcntl`` lock: a second process (another pytest worker, the demo) waits for the first build
instead of racing it, and an interrupted build never leaves a half chroot that looks finished.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CHROOT_NAME = "asterisk-sid"
#: What the tests need inside the chroot; the wav core sounds give us queue/ss-* prompts.
PACKAGES = ("asterisk", "asterisk-core-sounds-en-wav")
SUITE = "sid"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "CALLCENTER_PBX_MIRROR"
#: The file whose presence marks a usable chroot (the fast path checks only this).
ASTERISK_BIN = Path("usr/sbin/asterisk")


class ChrootError(RuntimeError):
    """The chroot could not be built; the message carries the tail of the build output."""


def default_cache_dir() -> Path:
    """``$CALLCENTER_PBX_CACHE``, else ``$XDG_CACHE_HOME/callcenter`` (``~/.cache/callcenter``).

    Outside the repository on purpose: the chroot survives fresh clones and work-tree rebuilds.
    """
    if os.environ.get("CALLCENTER_PBX_CACHE"):
        return Path(os.environ["CALLCENTER_PBX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "callcenter"


def _mirror_from_apt(
    sources_dir: Path = Path("/etc/apt/sources.list.d"),
    sources_list: Path = Path("/etc/apt/sources.list"),
) -> str | None:
    """The Debian mirror this host already uses (deb822 ``URIs:`` first, then one-line format).

    Reusing the host's mirror matters on machines that can only reach a local or proxied
    mirror. Security mirrors are skipped: they do not carry sid.
    """
    candidates: list[str] = []
    if sources_dir.is_dir():
        for f in sorted(sources_dir.glob("*.sources")):
            for line in f.read_text(errors="replace").splitlines():
                m = re.match(r"\s*URIs:\s*(.+)", line)
                if m:
                    candidates.extend(m.group(1).split())
    if sources_list.is_file():
        for line in sources_list.read_text(errors="replace").splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
            if m:
                candidates.append(m.group(1))
    for uri in candidates:
        if "security" not in uri and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return None


def resolve_mirror(mirror: str | None = None) -> str:
    """Argument, else ``$CALLCENTER_PBX_MIRROR``, else the host's apt sources, else deb.debian.org."""
    return mirror or os.environ.get(MIRROR_ENV) or _mirror_from_apt() or DEFAULT_MIRROR


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _run_streaming(cmd: list[str], progress: Callable[[str], None]) -> None:
    """Run ``cmd`` passing every output line to ``progress``; raise with the tail on failure."""
    progress("$ " + " ".join(cmd))
    tail: list[str] = []
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            progress(line)
            tail = [*tail[-39:], line]
        rc = proc.wait()
    if rc != 0:
        raise ChrootError(f"{cmd[0]} exited with {rc}:\n" + "\n".join(tail))


def _ensure_debootstrap(progress: Callable[[str], None]) -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    progress("debootstrap not found; installing it with apt-get")
    _run_streaming(["apt-get", "update"], progress)
    _run_streaming(["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"], progress)
    found = shutil.which("debootstrap")
    if not found:
        raise ChrootError("debootstrap still not on PATH after apt-get install")
    return found


def _prepare_runtime_dirs(root: Path) -> None:
    """Directories Asterisk expects even though each instance points its own dirs elsewhere."""
    for sub in ("var/lib/asterisk", "var/log/asterisk", "var/spool/asterisk", "var/run/asterisk", "srv"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def ensure_chroot(
    cache_dir: Path,
    mirror: str | None = None,
    progress: Callable[[str], None] = print,
) -> Path:
    """Return ``cache_dir/"asterisk-sid"``, building it with debootstrap when it is missing.

    The fast path (chroot present) touches no network and takes no lock.
    """
    target = cache_dir / CHROOT_NAME
    if (target / ASTERISK_BIN).is_file():
        _prepare_runtime_dirs(target)
        return target
    with _locked(cache_dir / f"{CHROOT_NAME}.lock"):
        # Someone else may have finished the build while we waited for the lock.
        if (target / ASTERISK_BIN).is_file():
            _prepare_runtime_dirs(target)
            return target
        if target.exists():
            raise ChrootError(f"{target} exists but has no {ASTERISK_BIN}; remove it to rebuild")
        tmp = cache_dir / f"{CHROOT_NAME}.tmp"
        if tmp.exists():
            progress(f"removing the leftover of an interrupted build: {tmp}")
            _umount_all_below(tmp)
            shutil.rmtree(tmp)
        debootstrap = _ensure_debootstrap(progress)
        url = resolve_mirror(mirror)
        progress(f"building the Asterisk chroot from {url} (one-off, a few minutes)")
        _run_streaming(
            [
                debootstrap,
                "--variant=minbase",
                "--include=" + ",".join(PACKAGES),
                SUITE,
                str(tmp),
                url,
            ],
            progress,
        )
        if not (tmp / ASTERISK_BIN).is_file():
            raise ChrootError(f"debootstrap finished but {tmp / ASTERISK_BIN} is missing")
        _umount_all_below(tmp)
        _prepare_runtime_dirs(tmp)
        os.rename(tmp, target)
        progress(f"chroot ready: {target}")
        return target


def _umount_all_below(root: Path) -> None:
    """Lazily unmount anything mounted inside ``root`` (debootstrap can leave /proc behind)."""
    prefix = str(root.resolve()) + "/"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
