"""A throwaway primary with a streaming replica, for database-failover tests.

The replica is what production gets from Patroni, made by hand: ``pg_basebackup -R`` of the primary
(the ``-R`` writes ``primary_conninfo`` and ``standby.signal``), started as a hot standby that streams
the primary's WAL, and ``pg_ctl promote`` when the primary is gone. Replication is *synchronous*
(``synchronous_standby_names = '*'``, ``synchronous_commit = on``): a commit is acknowledged to the
app only once the replica has the WAL, which is what lets a test demand that every acknowledged write
survives the primary's death. Patroni's ``synchronous_mode: true`` is the production equivalent.

    with ReplicatedPostgres() as pair:
        store = Store.from_url(pair.url)       # both hosts, target_session_attrs=read-write
        pair.fail_over()                       # primary killed (immediate), replica promoted
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Self

from callcenter.testing.postgres import PG_USER, PostgresError, ThrowawayPostgres

__all__ = ["ReplicatedPostgres", "StreamingReplica", "multi_host_url"]

#: The primary's settings on top of the throwaway defaults: commits wait for the replica.
PRIMARY_SETTINGS = {"synchronous_commit": "on", "wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on"}


def multi_host_url(
    servers: Sequence[ThrowawayPostgres], dbname: str, *, target_session_attrs: str = "read-write"
) -> str:
    """A store URL naming every server, the way production names the Patroni members.

    SQLAlchemy's asyncpg dialect takes the hosts as repeated ``host=<host>:<port>`` query arguments (with
    nothing between ``@`` and ``/``) and hands asyncpg the lists; asyncpg tries them in order and keeps
    the first whose session matches ``target_session_attrs``.
    """
    hosts = "&".join(f"host={s.host}:{s.port}" for s in servers)
    return f"postgresql+asyncpg://{PG_USER}@/{dbname}?{hosts}&target_session_attrs={target_session_attrs}"


class StreamingReplica(ThrowawayPostgres):
    """A hot standby of ``primary``, streaming its WAL until :meth:`promote`."""

    def __init__(self, primary: ThrowawayPostgres, *, application_name: str = "replica") -> None:
        super().__init__(
            dbname=primary.dbname,
            bin_dir=primary.bin_dir,
            start_timeout=primary.start_timeout,
            stop_timeout=primary.stop_timeout,
            settings=primary.settings,
        )
        self.primary = primary
        self.application_name = application_name

    def _create_data_dir(self) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_basebackup"),
                "-D", str(self.data_dir),
                "-h", self.primary.host,
                "-p", str(self.primary.port),
                "-U", PG_USER,
                "-R",                      # standby.signal + primary_conninfo
                "-X", "stream",
                "-c", "fast",
                "--no-sync",
                "-d", f"application_name={self.application_name}",
            ],
            "pg_basebackup",
        )  # fmt: skip

    def _after_start(self) -> None:
        """The database came with the base backup; a standby cannot create one anyway."""

    def promote(self, timeout: float = 30.0) -> None:
        """End recovery: the standby becomes a primary accepting writes (``pg_ctl promote -w``)."""
        cmd = [str(self.bin_dir / "pg_ctl"), "promote", "-D", str(self.data_dir), "-w", "-t", str(int(timeout))]
        self._run(cmd, "pg_ctl promote")

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"


class ReplicatedPostgres:
    """A primary and one synchronous streaming replica; :attr:`url` names both."""

    def __init__(self, *, dbname: str = "callcenter", start_timeout: float = 30.0) -> None:
        self.primary = ThrowawayPostgres(dbname=dbname, start_timeout=start_timeout, settings=PRIMARY_SETTINGS)
        self.replica = StreamingReplica(self.primary)
        self.dbname = dbname

    @property
    def url(self) -> str:
        """Both servers, primary first, ``target_session_attrs=read-write``."""
        return multi_host_url([self.primary, self.replica], self.dbname)

    def start(self) -> Self:
        try:
            self.primary.start()
            self.replica.start()
            self.wait_streaming()
            # Only now: with no standby connected, a synchronous primary would hold every commit.
            self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            self.primary.sql("SELECT pg_reload_conf()")
            self._wait_sync()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Until the primary reports the replica's WAL receiver as streaming."""
        self._wait_for("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", "1", timeout)

    def _wait_sync(self, timeout: float = 30.0) -> None:
        self._wait_for("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", "1", timeout)

    def _wait_for(self, query: str, expected: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.primary.sql(query)) != expected:
            if time.monotonic() > deadline:
                raise PostgresError(f"replication not ready within {timeout:.0f}s ({query!r} gave {got!r})")
            time.sleep(0.05)

    def fail_over(self) -> None:
        """The primary dies (immediate shutdown: no checkpoint, clients cut off) and the replica is promoted."""
        self.primary.halt(immediate=True)
        self.replica.promote()

    def stop(self) -> None:
        try:
            self.replica.stop()
        finally:
            self.primary.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
