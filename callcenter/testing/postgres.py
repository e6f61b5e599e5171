"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, serve on 127.0.0.1, tear it all down.

Uses the server binaries of the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout; override
with ``$CALLCENTER_PG_BIN`` or ``bin_dir=``). PostgreSQL refuses to run as root, so when we are root the
cluster is owned by and run as the ``postgres`` OS user (created as a system user if missing).

A server is never left behind: ``stop()`` runs from the context manager, from ``atexit``, and, if this
process dies without running either (SIGKILL), from a small watchdog process that notices its pipe close.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["PostgresError", "ThrowawayPostgres", "find_bin_dir"]

PG_ROOT = Path("/usr/lib/postgresql")
PG_USER = "postgres"
_NEEDED = ("initdb", "postgres", "pg_isready", "createdb")
_DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: Settings for a disposable server: durability off, little memory, no background noise.
SERVER_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "max_wal_size": "256MB",
    "autovacuum": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "UTC",
}

# Runs detached from us; reads postmaster pids from its stdin and, when the pipe closes (we exited or
# were killed), kills the last one if it is still our server, then removes the temp dir.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
tmp, marker = sys.argv[1], sys.argv[2].encode()
pid = 0
for line in sys.stdin:
    pid = int(line.strip() or 0)
def ours():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker in f.read()
    except OSError:
        return False
if pid and ours():
    try:
        os.kill(pid, signal.SIGINT)
        for _ in range(50):
            time.sleep(0.1)
            if not ours():
                break
        else:
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
shutil.rmtree(tmp, ignore_errors=True)
"""


class PostgresError(RuntimeError):
    """The throwaway cluster could not be created, started or used."""


def find_bin_dir(root: Path = PG_ROOT) -> Path:
    """The newest ``<root>/<version>/bin`` holding the server binaries (``$CALLCENTER_PG_BIN`` wins)."""
    override = os.environ.get("CALLCENTER_PG_BIN")
    candidates: list[tuple[tuple[int, ...], Path]] = []
    if override:
        candidates.append(((1 << 30,), Path(override)))
    for bin_dir in root.glob("*/bin"):
        version = tuple(int(p) for p in re.findall(r"\d+", bin_dir.parent.name)) or (0,)
        candidates.append((version, bin_dir))
    for _version, bin_dir in sorted(candidates, reverse=True):
        if all((bin_dir / name).is_file() for name in _NEEDED):
            return bin_dir
    looked = f"$CALLCENTER_PG_BIN={override}, " if override else ""
    raise PostgresError(
        f"no PostgreSQL server binaries found (looked in {looked}{root}/*/bin for {', '.join(_NEEDED)}); "
        "install them, e.g. `apt-get install postgresql`, or set CALLCENTER_PG_BIN"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        raise PostgresError(
            f"running as root and there is no {PG_USER!r} OS user to run PostgreSQL as; "
            f"creating it with {' '.join(cmd)} failed: {proc.stderr.strip() or proc.returncode}"
        ) from None


_live: set[ThrowawayPostgres] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class ThrowawayPostgres:
    """One disposable PostgreSQL server; ``with ThrowawayPostgres() as pg: pg.url``."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        dbname: str = "callcenter",
        bin_dir: Path | str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        _check_name(dbname)
        self.dbname = dbname
        #: Server settings: :data:`SERVER_SETTINGS` with ``settings`` over them (command-line ``-c``
        #: options, so ``ALTER SYSTEM`` cannot override these).
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        self._lock = threading.RLock()

    # -- paths and urls --------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._tmp / "data"

    @property
    def log_path(self) -> Path:
        return self._tmp / "server.log"

    @property
    def _tmp(self) -> Path:
        if self.tmp is None:
            raise PostgresError("the throwaway PostgreSQL cluster is not started")
        return self.tmp

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database ``start()`` created."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        if not self.port:
            raise PostgresError("the throwaway PostgreSQL cluster is not started")
        return f"postgresql+asyncpg://{PG_USER}@{self.host}:{self.port}/{dbname}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Create the cluster, start the server and create ``dbname``; idempotent while running."""
        with self._lock:
            if self.running:
                return self
            if self.tmp is not None:
                raise PostgresError("cluster was stopped; use resume() to start it again, or a new instance")
            try:
                self._init_cluster()
                for attempt in range(3):
                    self.port = free_port(self.host)
                    try:
                        self._start_server()
                        break
                    except PostgresError as exc:
                        # Someone took the free port between our probe and the server's bind: try another.
                        if attempt == 2 or ("could not bind" not in str(exc) and "in use" not in str(exc)):
                            raise
                self._after_start()
            except BaseException:
                self.stop()
                raise
            return self

    def _after_start(self) -> None:
        """First start only: create ``dbname`` (a standby overrides this: it has the primary's)."""
        self.create_database(self.dbname)

    def halt(self, *, immediate: bool = False) -> None:
        """Stop the server (fast shutdown, then kill) but keep the cluster, so ``resume()`` can restart it.

        ``immediate``: SIGQUIT, what ``pg_ctl stop -m immediate`` sends: no checkpoint, no goodbye to
        clients, crash recovery on the next start; the nearest we get to a host losing power.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    # SIGINT: "fast" shutdown (roll back sessions, checkpoint, exit); SIGQUIT: immediate
                    os.kill(proc.pid, signal.SIGQUIT if immediate else signal.SIGINT)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(self.stop_timeout)
            # Backends notice a dead postmaster on their own; make sure none outlives it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._proc = None
            if self._log is not None:
                self._log.close()
                self._log = None

    def resume(self) -> None:
        """Start a halted server again on the same port with the same data."""
        with self._lock:
            if self.running:
                return
            if not (self.tmp and self.data_dir.is_dir()):
                raise PostgresError("nothing to resume: the cluster was never started or has been removed")
            self._start_server()

    def restart(self) -> None:
        """Fast shutdown and start again (same port, same data): clients see their connections dropped."""
        with self._lock:
            self.halt()
            self.resume()

    def stop(self) -> None:
        """Stop the server and remove the cluster; safe to call more than once."""
        with self._lock:
            try:
                self.halt()
            finally:
                if self.tmp is not None:
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    self.tmp = None
                if self._watchdog is not None:
                    if self._watchdog.stdin is not None:
                        with contextlib.suppress(OSError):
                            self._watchdog.stdin.close()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._watchdog.wait(5)
                    self._watchdog = None
                with _live_lock:
                    _live.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        _check_name(name)
        self._client("createdb", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting any sessions still on it."""
        _check_name(name)
        self._client("dropdb", "--if-exists", "--force", name)

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement with ``psql`` and return its unaligned output (setup and checks in tests)."""
        return self._client("psql", "-d", dbname, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement)

    # -- internals -------------------------------------------------------------------------------

    def _client(self, tool: str, *args: str) -> str:
        if not self.running:
            raise PostgresError(f"{tool}: the throwaway PostgreSQL server is not running")
        cmd = [str(self.bin_dir / tool), "-h", self.host, "-p", str(self.port), "-U", PG_USER, "-w", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()

    def _owner(self) -> tuple[int | None, int | None, list[int] | None]:
        """(user, group, extra_groups) for Popen: run server binaries as the cluster's owner."""
        if self._user is None:
            return None, None, None
        return self._user.pw_uid, self._user.pw_gid, []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self._user is not None:
            env.update(HOME=str(self._tmp), USER=PG_USER, LOGNAME=PG_USER)
        return env

    def _run(self, cmd: Sequence[str], what: str) -> None:
        user, group, extra_groups = self._owner()
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=120,
            check=False,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()
            raise PostgresError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{out}")

    def _init_cluster(self) -> None:
        if os.geteuid() == 0:
            self._user = _ensure_pg_user()
        self.tmp = Path(tempfile.mkdtemp(prefix="callcenter-pg-"))
        with _live_lock:
            _live.add(self)
        if self._user is not None:
            os.chown(self.tmp, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.tmp, 0o700)
        self._start_watchdog()
        self._create_data_dir()

    def _create_data_dir(self) -> None:
        """A fresh cluster (a standby overrides this with a base backup of its primary)."""
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "-A", "trust",
                "-U", PG_USER,
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip

    def _start_watchdog(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self._tmp), str(self.data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _tell_watchdog(self, pid: int) -> None:
        if self._watchdog is not None and self._watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                self._watchdog.stdin.write(f"{pid}\n".encode())
                self._watchdog.stdin.flush()

    def _start_server(self) -> None:
        cmd = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-k", str(self._tmp),
            "-h", self.host,
            "-p", str(self.port),
            "-F",
        ]  # fmt: skip
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's lifetime
        # A session of its own: a ^C at the terminal reaches us (and our cleanup), not the server directly,
        # and the whole server (postmaster and backends) can be killed as one process group.
        user, group, extra_groups = self._owner()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        self._tell_watchdog(self._proc.pid)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        isready = [str(self.bin_dir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        isready += ["-U", PG_USER, "-d", "postgres", "-t", "2"]
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.halt()
                raise PostgresError(f"postgres exited with status {code} while starting{self._log_tail()}")
            if subprocess.run(isready, env=self._env(), check=False, timeout=10).returncode == 0:
                return
            if time.monotonic() > deadline:
                self.halt()
                raise PostgresError(
                    f"postgres did not accept connections on {self.host}:{self.port} "
                    f"within {self.start_timeout:.0f}s{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except (OSError, PostgresError):
            return " (no server log)"
        return f"; server log ({self.log_path}) ends:\n" + "\n".join(text)


def _check_name(name: str) -> None:
    if not _DBNAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
