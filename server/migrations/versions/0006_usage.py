"""Usage dashboard rollups, kept by triggers on ``entries``: usage_counts (per station and UTC day or
month, and per UTC day over all stations: visits per UTC hour and the other counts), usage_hours (the
same counts per station and UTC hour, for the ends of a range) and usage_visitors (each worker's first and
last visit, per station and at any station).

The triggers count every inserted entry in the same transaction, however it
was stored (ingest, API, bulk COPY): PostgreSQL with one statement-level
trigger (a transition table, so a batch of 200 entries costs one upsert of a
few rows per table, taken in key order so concurrent ingest processes cannot
deadlock), SQLite with a row trigger. Existing entries are counted here once.
Nothing decrements the counts: they hold no personal data and stay when
retention purges or anonymises entries. What counts as what: server/usage.py
(``classify``, the same rules in Python, tested against these).

SQLite drops a table's triggers with the table: a later migration that
rebuilds ``entries`` with ``batch_alter_table`` must call ``create_triggers``
again. tests/server/test_usage.py checks that the triggers count at head.

Revision ID: 0006_usage
Revises: 0005_entry_indexes
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_usage"
down_revision = "0005_entry_indexes"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
CATEGORIES = ("courier", "food_delivery", "sanitation", "designated_driver", "other")
_VISIT = "e.decision = 'granted' AND e.kind IN ('face', 'qr')"
_ATTEMPT = "e.kind IN ('face', 'qr')"
# Each count, over a row ``e`` with an entry's columns, its worker's category and its UTC hour ``h``.
COUNTS = {
    **{f"visits_h{h:02d}": f"{_VISIT} AND e.h = {h}" for h in range(24)},
    "visits": _VISIT,
    "visits_qr": "e.decision = 'granted' AND e.kind = 'qr'",
    **{f"cat_{c}": f"{_VISIT} AND e.category = '{c}'" for c in CATEGORIES},
    "denied": f"e.decision = 'denied' AND {_ATTEMPT} AND e.worker_id IS NOT NULL",
    "unknown": f"e.decision = 'denied' AND {_ATTEMPT} AND e.worker_id IS NULL",
    "spoof": "e.decision = 'spoof'",
    "exits": "e.kind = 'exit_request'",
    "alarms": "e.kind IN ('forced_open', 'held_open', 'tamper')",
}
HOUR_COUNTS = [c for c in COUNTS if not c.startswith("visits_h")]
"""What usage_hours counts: the same without the visits per hour."""
TIME = {  # the UTC day's, month's and hour's start (seconds since 1970) and the UTC hour of n.occurred_at
    "postgresql": (
        "(floor(extract(epoch FROM n.occurred_at) / 86400) * 86400)::bigint",
        "extract(epoch FROM date_trunc('month', n.occurred_at AT TIME ZONE 'UTC'))::bigint",
        "(floor(extract(epoch FROM n.occurred_at) / 3600) * 3600)::bigint",
        "CAST(extract(hour FROM n.occurred_at AT TIME ZONE 'UTC') AS integer)",
    ),
    # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    "sqlite": (
        "(CAST(strftime('%s', n.occurred_at) AS INTEGER) / 86400) * 86400",
        "CAST(strftime('%s', n.occurred_at, 'start of month') AS INTEGER)",
        "(CAST(strftime('%s', n.occurred_at) AS INTEGER) / 3600) * 3600",
        "CAST(strftime('%H', n.occurred_at) AS INTEGER)",
    ),
}


def _rows(dialect: str, source: str) -> str:
    """The entries of ``source`` (a table or subquery, alias n) with their worker's category and UTC periods."""
    day, month, hour_s, hour = TIME[dialect]
    return (f"SELECT n.station_id, n.worker_id, n.kind, n.decision, {day} AS day_s, {month} AS month_s, "
            f"{hour_s} AS hour_s, {hour} AS h, w.category FROM {source} AS n "
            "LEFT JOIN workers AS w ON w.worker_id = n.worker_id")


def _sums(names: list[str] | dict[str, str]) -> str:
    return ", ".join(f"SUM(CASE WHEN {COUNTS[c]} THEN 1 ELSE 0 END)" for c in names)


def _hours(dialect: str, source: str) -> str:
    """INSERT ... SELECT of the usage_hours rows of the entries in ``source``."""
    return (
        f"INSERT INTO usage_hours (station_id, hour_s, {', '.join(HOUR_COUNTS)})\n"
        f"SELECT e.station_id, e.hour_s, {_sums(HOUR_COUNTS)}\nFROM ({_rows(dialect, source)}) AS e\n"
        "GROUP BY e.station_id, e.hour_s"
    )


def _counts(dialect: str, source: str) -> str:
    """INSERT ... SELECT of the usage_counts rows of the entries in ``source``."""
    rows = _rows(dialect, source)
    spans = " UNION ALL ".join(
        f"SELECT '{period}' AS period, {station} AS station_id, e.{start} AS start_s, "
        f"e.worker_id, e.kind, e.decision, e.h, e.category FROM ({rows}) AS e"
        for period, station, start in (("day", "e.station_id", "day_s"), ("day", "''", "day_s"),
                                       ("month", "e.station_id", "month_s"))
    )
    return (
        f"INSERT INTO usage_counts (period, station_id, start_s, {', '.join(COUNTS)})\n"
        f"SELECT g.period, g.station_id, g.start_s, {_sums(COUNTS).replace('e.', 'g.')}\nFROM ({spans}) AS g\n"
        "GROUP BY g.period, g.station_id, g.start_s"
    )


def _visitors(source: str) -> str:
    # Each worker's visits twice: at their station, and at '' (any station).
    rows = (f"SELECT n.worker_id, n.station_id, n.occurred_at FROM {source} AS n "
            f"WHERE {_VISIT.replace('e.', 'n.')} AND n.worker_id IS NOT NULL")
    both = f"{rows} UNION ALL {rows.replace('n.station_id', chr(39) * 2, 1)}"
    return (
        "INSERT INTO usage_visitors (worker_id, station_id, first_visit_at, last_visit_at)\n"
        f"SELECT v.worker_id, v.station_id, MIN(v.occurred_at), MAX(v.occurred_at) FROM ({both}) AS v\n"
        "GROUP BY v.worker_id, v.station_id"
    )


def _on_conflict(qualify: bool, least: str, greatest: str) -> tuple[str, str, str]:
    """The upserts' ON CONFLICT clauses; PostgreSQL wants the table named, SQLite does not."""
    counts, hours, visitors = ("usage_counts.", "usage_hours.", "usage_visitors.") if qualify else ("", "", "")
    add = ", ".join(f"{c} = {counts}{c} + excluded.{c}" for c in COUNTS)
    add_hours = ", ".join(f"{c} = {hours}{c} + excluded.{c}" for c in HOUR_COUNTS)
    visits = (f"first_visit_at = {least}({visitors}first_visit_at, excluded.first_visit_at), "
              f"last_visit_at = {greatest}({visitors}last_visit_at, excluded.last_visit_at)")
    return (f"\nON CONFLICT (period, station_id, start_s) DO UPDATE SET {add}",
            f"\nON CONFLICT (hour_s, station_id) DO UPDATE SET {add_hours}",
            f"\nON CONFLICT (worker_id, station_id) DO UPDATE SET {visits}")


def create_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        counts, hours, visitors = _on_conflict(True, "LEAST", "GREATEST")
        op.execute(
            "CREATE OR REPLACE FUNCTION usage_count_entries() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            f"{_counts(dialect, 'new_entries')}\nORDER BY 1, 2, 3{counts};\n"
            f"{_hours(dialect, 'new_entries')}\nORDER BY 2, 1{hours};\n"
            f"{_visitors('new_entries')}\nORDER BY 1, 2{visitors};\nRETURN NULL;\nEND\n$$"
        )
        op.execute(
            "CREATE TRIGGER entries_usage AFTER INSERT ON entries REFERENCING NEW TABLE AS new_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION usage_count_entries()"
        )
    elif dialect == "sqlite":
        # The new row as a one-row table (SQLite allows no WITH in triggers). "HAVING true": the parser then
        # cannot take ON CONFLICT for a join's ON (SQLite's documented ambiguity of INSERT ... SELECT).
        new = ("(SELECT NEW.station_id AS station_id, NEW.worker_id AS worker_id, NEW.kind AS kind, "
               "NEW.decision AS decision, NEW.occurred_at AS occurred_at)")
        counts, hours, visitors = _on_conflict(False, "MIN", "MAX")
        op.execute(
            "CREATE TRIGGER entries_usage AFTER INSERT ON entries BEGIN\n"
            f"{_counts(dialect, new)} HAVING true{counts};\n"
            f"{_hours(dialect, new)} HAVING true{hours};\n{_visitors(new)} HAVING true{visitors};\nEND"
        )
    else:
        raise NotImplementedError(f"usage triggers for {dialect}")


def drop_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS entries_usage ON entries")
        op.execute("DROP FUNCTION IF EXISTS usage_count_entries()")
    else:
        op.execute("DROP TRIGGER IF EXISTS entries_usage")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "usage_counts",
        sa.Column("period", sa.String(5), nullable=False),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("start_s", sa.BigInteger(), autoincrement=False, nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in COUNTS),
        sa.CheckConstraint("period IN ('day', 'month')", name=op.f("ck_usage_counts_period")),
        sa.PrimaryKeyConstraint("period", "station_id", "start_s", name=op.f("pk_usage_counts")),
    )
    op.create_index("ix_usage_counts_period_start", "usage_counts", ["period", "start_s"])
    op.create_table(
        "usage_hours",
        sa.Column("hour_s", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("station_id", sa.String(63), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in HOUR_COUNTS),
        sa.PrimaryKeyConstraint("hour_s", "station_id", name=op.f("pk_usage_hours")),
    )
    op.create_table(
        "usage_visitors",
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("first_visit_at", UTC, nullable=False),
        sa.Column("last_visit_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "station_id", name=op.f("pk_usage_visitors")),
    )
    op.create_index(
        "ix_usage_visitors_station_last", "usage_visitors", ["station_id", "last_visit_at", "first_visit_at"]
    )
    op.execute(_counts(dialect, "entries"))
    op.execute(_hours(dialect, "entries"))
    op.execute(_visitors("entries"))
    create_triggers(dialect)


def downgrade() -> None:
    drop_triggers(op.get_bind().dialect.name)
    op.drop_table("usage_visitors")
    op.drop_table("usage_hours")
    op.drop_table("usage_counts")
