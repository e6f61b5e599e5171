"""hourly statistics roll-up, kept current by triggers; call-log indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 18:00:00

Why (``store/stats.py``, measured by ``bench/p6_stats.py`` on 1 M calls): grouping a year of raw
calls, incidents, dispatches and ratings per request took 3.6-10 s. ``stats_rollup`` holds those
groups per UTC hour (and per UTC day, summed from the hours), so a year is read from under two
hundred thousand small rows instead of joining millions.

The roll-up is only as good as its invalidation, and writes come from everywhere: the tracker, the
console, the dispatcher, ratings, retention, scripts and bulk loads. So the database does it, not
the app: triggers on ``calls``, ``incidents``, ``dispatches`` and ``ratings`` put every UTC hour a
change touches (before and after an update) into ``stats_dirty``, and ``Rollup.refresh()``
recomputes just those hours from the raw rows before statistics are read.

* A row is marked under the hour its statistics are counted in: calls by arrival, incidents (with
  their dispatch acknowledgement and ratings) by creation, dispatches by creation. A dispatch or
  rating also marks its incident's hour; a call's change also marks the hours of its incidents
  (the acknowledgement time is measured from the call's arrival, ratings count under its taker).
* Updates fire only when a column the statistics read changes (``UPDATE OF … WHEN``): the tracker's
  other updates (end time, talk time, recording) cost nothing.
* PostgreSQL: ``stats_dirty`` is keyed by (hour, writing transaction), so a writer never waits on
  or reuses another transaction's mark. A refresh deletes only marks it can see (committed), so a
  change still in flight keeps its own mark and is picked up by the next refresh - no lost update
  under READ COMMITTED. Inserts and deletes use statement triggers with transition tables (a COPY
  of a million rows marks its hours in one statement); TRUNCATE drops the roll-up's version row,
  which makes the next refresh rebuild everything.
* SQLite has one writer at a time, so the hour alone is the key (``tx`` is always 0).

The roll-up itself starts empty: ``Rollup.refresh()`` finds no version row and rebuilds it in
bounded steps (``callcenter stats rebuild`` does it at once).

The hour key is whole hours since 1970-01-01 UTC; the expressions below must stay identical to
``stats.hour_key``. NOTE for later migrations: SQLite's batch mode rebuilds a table by copying it,
which drops its triggers - a batch migration of one of these four tables must create them again
(``tests/protocol/test_stats_rollup.py`` fails if they are missing).

Indexes for the call log's agency filter (``IN`` over the agency's incidents, then each call's
arrival): ``ix_dispatches_agency_incident`` serves the subquery from the index alone; SQLite probes each
candidate call in ``ix_calls_id_arrived`` without reading the wide call row, PostgreSQL hashes the ids
of the period's calls from ``ix_calls_arrived_id`` (index-only, where it read ~200 MB of call rows).
``ix_calls_arrived_id`` replaces the plain ``ix_calls_arrived_at``: it serves every range on arrival
the same way and is also the log's order (arrival, id - newest first) for both planners.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

HOUR = {
    "sqlite": "(CAST(strftime('%s', substr({}, 1, 13) || ':00:00') AS INTEGER) / 3600)",
    "postgresql": "CAST(floor(extract(epoch FROM {}) / 3600) AS INTEGER)",
}

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_dispatches_agency_incident", "dispatches", ["agency", "incident_id"]),
    ("ix_calls_id_arrived", "calls", ["id", "arrived_at"]),
    ("ix_calls_arrived_id", "calls", ["arrived_at", "id"]),
)


class Source(NamedTuple):
    """What a change to one table invalidates (a NamedTuple: Alembic loads this file outside
    ``sys.modules``, where a dataclass cannot resolve its annotations)."""

    table: str
    #: The table's own timestamp its statistics are counted by (None: counted under its incident).
    own: str | None
    #: Column naming the incident whose hour this row's statistics count under.
    incident: str | None
    #: Whether the incidents of this call (``incidents.call_id = id``) are touched too.
    incidents_of_call: bool
    #: Columns the statistics read: an update changing none of them marks nothing.
    watched: tuple[str, ...]


SOURCES = (
    Source(
        "calls",
        own="arrived_at",
        incident=None,
        incidents_of_call=True,
        watched=("arrived_at", "answered_at", "wait_seconds", "status", "classification", "answered_by"),
    ),
    Source(
        "incidents",
        own="created_at",
        incident=None,
        incidents_of_call=False,
        watched=("created_at", "category", "call_id"),
    ),
    Source(
        "dispatches",
        own="created_at",
        incident="incident_id",
        incidents_of_call=False,
        watched=("created_at", "agency", "accepted_at", "incident_id"),
    ),
    Source("ratings", own=None, incident="incident_id", incidents_of_call=False, watched=("score", "incident_id")),
)


def _hours(dialect: str, src: Source, row: str, rows_table: str | None = None) -> list[str]:
    """SELECTs yielding the hours a row touches. ``row`` is ``NEW``/``OLD`` in a row trigger, or the
    alias of ``rows_table`` (a transition table) in a statement trigger."""
    hour = HOUR[dialect].format
    source = f" FROM {rows_table} {row}" if rows_table else ""
    joined = f"{rows_table} {row} JOIN " if rows_table else ""
    selects = []
    if src.own:
        selects.append(f"SELECT {hour(f'{row}.{src.own}')} AS h{source}")
    if src.incident:
        on = f"i.id = {row}.{src.incident}"
        selects.append(
            f"SELECT {hour('i.created_at')} AS h FROM {joined}incidents i ON {on}"
            if rows_table
            else f"SELECT {hour('i.created_at')} AS h FROM incidents i WHERE {on}"
        )
    if src.incidents_of_call:
        on = f"i.call_id = {row}.id"
        selects.append(
            f"SELECT {hour('i.created_at')} AS h FROM {joined}incidents i ON {on}"
            if rows_table
            else f"SELECT {hour('i.created_at')} AS h FROM incidents i WHERE {on}"
        )
    return selects


def _changed(src: Source, sqlite: bool) -> str:
    differs = "IS NOT" if sqlite else "IS DISTINCT FROM"
    return " OR ".join(f"OLD.{c} {differs} NEW.{c}" for c in src.watched)


def _sqlite_triggers(src: Source) -> list[str]:
    # ON CONFLICT DO NOTHING, not INSERT OR IGNORE: a foreign-key action (a deleted call setting its
    # incidents' call_id to NULL) runs the trigger under its own ABORT policy, which overrides OR IGNORE.
    def body(*rows: str) -> str:
        return "".join(
            f"INSERT INTO stats_dirty (hour, tx) SELECT h, 0 FROM ({s}) WHERE h IS NOT NULL ON CONFLICT DO NOTHING;\n"
            for row in rows
            for s in _hours("sqlite", src, row)
        )

    t = src.table
    cols = ", ".join(src.watched)
    return [
        f"CREATE TRIGGER stats_{t}_insert AFTER INSERT ON {t} BEGIN\n{body('NEW')}END",
        f"CREATE TRIGGER stats_{t}_delete AFTER DELETE ON {t} BEGIN\n{body('OLD')}END",
        f"CREATE TRIGGER stats_{t}_update AFTER UPDATE OF {cols} ON {t}\n"
        f"WHEN {_changed(src, sqlite=True)} BEGIN\n{body('OLD', 'NEW')}END",
    ]


def _postgres_ddl(src: Source) -> list[str]:
    t = src.table

    def mark(selects: list[str]) -> str:
        union = " UNION ".join(selects)
        return (
            f"INSERT INTO stats_dirty (hour, tx) SELECT DISTINCT h, txid_current() FROM ({union}) AS touched\n"
            "    WHERE h IS NOT NULL ON CONFLICT DO NOTHING;"
        )

    function = f"""
CREATE FUNCTION stats_mark_{t}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {mark(_hours("postgresql", src, "r", "new_rows"))}
  ELSIF TG_OP = 'DELETE' THEN
    {mark(_hours("postgresql", src, "r", "old_rows"))}
  ELSE
    {mark(_hours("postgresql", src, "OLD") + _hours("postgresql", src, "NEW"))}
  END IF;
  RETURN NULL;
END
$$"""
    cols = ", ".join(src.watched)
    return [
        function,
        f"CREATE TRIGGER stats_{t}_insert AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION stats_mark_{t}()",
        f"CREATE TRIGGER stats_{t}_delete AFTER DELETE ON {t} REFERENCING OLD TABLE AS old_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION stats_mark_{t}()",
        f"CREATE TRIGGER stats_{t}_update AFTER UPDATE OF {cols} ON {t} FOR EACH ROW"
        f" WHEN ({_changed(src, sqlite=False)}) EXECUTE FUNCTION stats_mark_{t}()",
        f"CREATE TRIGGER stats_{t}_truncate AFTER TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION stats_forget()",
    ]


FORGET = """
CREATE FUNCTION stats_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM stats_rollup WHERE span = 0;
  RETURN NULL;
END
$$"""


def upgrade() -> None:
    op.create_table(
        "stats_rollup",
        sa.Column("span", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("span", "kind", "hour", "key"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stats_dirty",
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("tx", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "tx"),
        sqlite_with_rowid=False,
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)
    op.drop_index("ix_calls_arrived_at", table_name="calls")
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for src in SOURCES:
            for ddl in _sqlite_triggers(src):
                op.execute(ddl)
    else:
        op.execute(FORGET)
        for src in SOURCES:
            for ddl in _postgres_ddl(src):
                op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for src in reversed(SOURCES):
        for what in ("insert", "delete", "update") + (("truncate",) if dialect != "sqlite" else ()):
            op.execute(
                f"DROP TRIGGER IF EXISTS stats_{src.table}_{what}" + ("" if dialect == "sqlite" else f" ON {src.table}")
            )
        if dialect != "sqlite":
            op.execute(f"DROP FUNCTION IF EXISTS stats_mark_{src.table}()")
    if dialect != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS stats_forget()")
    op.create_index("ix_calls_arrived_at", "calls", ["arrived_at"], unique=False)
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("stats_dirty")
    op.drop_table("stats_rollup")
