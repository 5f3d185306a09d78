"""Storing a batch of entry events in one transaction, idempotent on ``event_id``.

One transaction per batch with ``INSERT ... ON CONFLICT (event_id) DO
NOTHING RETURNING event_id``: on PostgreSQL one statement taking each column
as an array (``unnest``), on SQLite (3.35 or newer) multi-row inserts. The
database, not a read before the write, decides which events are new, so two
ingest workers storing the same event at once still store it once. The
returned ids tell new events from duplicates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from sqlalchemy import TextClause, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from models.messages import EntryEvent
from server.tables import Entry, utcnow

ENTRIES = Entry.__table__
_SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35)

PERMANENT_ERRORS = (DataError, IntegrityError)
"""Errors caused by the data itself (e.g. a NUL character PostgreSQL cannot store): retrying cannot help."""


def entry_row(event: EntryEvent, received_at: datetime) -> dict[str, object]:
    return {
        "event_id": str(event.event_id),
        "station_id": event.station_id,
        "worker_id": event.worker_id,
        "kind": event.kind.value,
        "decision": event.decision.value,
        "reason": event.reason,
        "distance": event.scores.distance,
        "second_distance": event.scores.second_distance,
        "frames": event.scores.frames,
        "face_px": event.scores.face_px,
        "liveness": event.scores.liveness,
        "blinks": event.scores.blinks,
        "head_motion": event.scores.head_motion,
        "liveness_ms": event.scores.liveness_ms,
        "decision_ms": event.decision_ms,
        "gallery_version": event.gallery_version,
        "occurred_at": event.occurred_at,
        "received_at": received_at,
    }


def store_events(*, session: Session, events: Sequence[EntryEvent], received_at: datetime | None = None) -> set[str]:
    """Insert the events not stored yet, commit, and return the ids that were new.

    Raises what the database raises; nothing is committed then. An event id
    repeated within ``events`` is stored once.
    """
    at = received_at or utcnow()
    rows: dict[str, dict[str, object]] = {}
    for event in events:
        rows.setdefault(str(event.event_id), entry_row(event, at))
    values = list(rows.values())
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # One statement whatever the batch size: each column travels as one array (parsed once, cached).
        arrays = {name: [row[name] for row in values] for name in _COLUMNS}
        new = set(session.execute(_pg_unnest_insert(), arrays).scalars())
        session.commit()
        return new
    if dialect == "sqlite" and _SQLITE_RETURNING:
        stmt = sqlite_insert(ENTRIES).on_conflict_do_nothing(index_elements=["event_id"]).returning(ENTRIES.c.event_id)
    else:
        return _one_by_one(session, values)
    # A list of parameter sets: SQLAlchemy's "insertmanyvalues" sends them as multi-row INSERTs from one
    # cached statement (compiling a fresh VALUES list per batch would cost more than the insert itself).
    new = set(session.execute(stmt, values).scalars())
    session.commit()
    return new


_COLUMNS = [c.name for c in ENTRIES.columns if c.name != "id"]


@lru_cache(maxsize=1)
def _pg_unnest_insert() -> TextClause:
    """``INSERT INTO entries (...) SELECT * FROM unnest(:a::type[], ...) ON CONFLICT DO NOTHING RETURNING event_id``."""
    dialect = postgresql.dialect()
    casts = ", ".join(f"CAST(:{name} AS {ENTRIES.c[name].type.compile(dialect=dialect)}[])" for name in _COLUMNS)
    return text(
        f"INSERT INTO entries ({', '.join(_COLUMNS)}) SELECT * FROM unnest({casts}) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )


def _one_by_one(session: Session, values: list[dict[str, object]]) -> set[str]:
    """Databases without RETURNING on upserts: one row at a time, the unique constraint decides."""
    new: set[str] = set()
    for row in values:
        try:
            with session.begin_nested():
                session.execute(insert(ENTRIES).values(**row))
            new.add(str(row["event_id"]))
        except IntegrityError:
            pass
    session.commit()
    return new
