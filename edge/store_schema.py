"""The tables of the edge's SQLite file (edge.db) and how older files are brought up to date.

Used only by edge/store.py, which owns the engine (see there for what each table holds), and by
edge/outbox_store.py (the outbox table).
"""

from __future__ import annotations

import logging
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

log = logging.getLogger("edge.store")

DB_NAME = "edge.db"
SCHEMA_VERSION = 2
# What one queued event costs on disk besides its payload and topic: the row
# header, the seq key, and the event id twice (row and unique index).
OUTBOX_ROW_OVERHEAD = 100



metadata = sa.MetaData()

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, default=""),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    # Schema 2: validity window (UTC epoch seconds, NULL = open) and whether this station may grant.
    sa.Column("valid_from", sa.Float, nullable=True),
    sa.Column("valid_until", sa.Float, nullable=True),
    sa.Column("allowed", sa.Boolean, nullable=False, default=True, server_default=sa.true()),
)

encodings = sa.Table(
    "encodings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("worker_id", sa.String(64), sa.ForeignKey("workers.worker_id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),  # 128 little-endian float32
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

# The server's latest applied settings for this station (edge/station_config.py): one row, id 1.
# A table added later needs no schema version: create_all adds it to an older file.
station_config = sa.Table(
    "station_config",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the StationConfig as received, re-validated when read
)

PendingEvent = tuple[str, str, bytes]
"""(event_id, topic, payload) of an entry event not yet acknowledged by the broker."""


def set_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def row_bytes(topic: str, payload: bytes) -> int:
    return len(payload) + len(topic) + OUTBOX_ROW_OVERHEAD


ROW_BYTES_SUM = sa.func.sum(
    sa.func.length(outbox.c.payload) + sa.func.length(outbox.c.topic) + OUTBOX_ROW_OVERHEAD
)


def upgrade_from_1(conn: Connection) -> None:
    """Schema 1 -> 2: the validity window and access flag (existing workers: open window, allowed)."""
    conn.exec_driver_sql("ALTER TABLE workers ADD COLUMN valid_from FLOAT")
    conn.exec_driver_sql("ALTER TABLE workers ADD COLUMN valid_until FLOAT")
    conn.exec_driver_sql("ALTER TABLE workers ADD COLUMN allowed BOOLEAN NOT NULL DEFAULT 1")
    conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    log.info("edge database upgraded from schema 1 to %d", SCHEMA_VERSION)


def chunks(items: list, size: int) -> Iterable[list]:
    """``items`` in lists of at most ``size``: SQLite caps the parameters of one statement."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
