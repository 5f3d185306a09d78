"""The entry log: idempotent storage of station events and keyset-paged reading.

Reading pages over ``(occurred_at, id)`` descending with an opaque cursor keeps
every page as fast as the first on millions of rows (no OFFSET), and a row
inserted while someone pages never makes another row appear twice or vanish.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.messages import Decision, EntryEvent
from server.ingest_store import entry_row
from server.tables import Entry, Worker, utcnow

MAX_PAGE = 1000
ENTRIES = Entry.__table__


class InvalidCursor(ValueError):
    """The cursor was not made by this server (or was altered)."""


def store_event(*, session: Session, event: EntryEvent, received_at: datetime | None = None) -> bool:
    """Insert the event unless its event_id is stored already; True if it was new. Commits."""
    values = entry_row(event, received_at or utcnow())
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # PostgreSQL reports no rowcount for an insert that returns rows; ask for the new id instead.
        stmt = pg_insert(ENTRIES).values(**values).on_conflict_do_nothing(index_elements=["event_id"])
        inserted = session.execute(stmt.returning(ENTRIES.c.id)).first() is not None
        session.commit()
        return inserted
    if dialect == "sqlite":
        stmt = sqlite_insert(ENTRIES).values(**values).on_conflict_do_nothing(index_elements=["event_id"])
        inserted = session.execute(stmt).rowcount == 1
        session.commit()
        return inserted
    try:  # any other database: let the unique constraint decide
        session.execute(insert(ENTRIES).values(**values))
        session.commit()
        return True
    except IntegrityError:
        session.rollback()
        return False


@dataclass(frozen=True)
class EntryPage:
    rows: Sequence[Row[tuple[Entry, str | None]]]
    """(entry, worker name or None) pairs, newest first."""
    next_cursor: str | None


def list_entries(
    *,
    session: Session,
    limit: int = 100,
    cursor: str | None = None,
    station_id: str | None = None,
    worker_id: str | None = None,
    decision: Decision | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> EntryPage:
    """One page of entries, newest first; ``since`` inclusive, ``until`` exclusive (station time)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    stmt = select(Entry, Worker.name).outerjoin(Worker, Worker.worker_id == Entry.worker_id)
    if station_id is not None:
        stmt = stmt.where(Entry.station_id == station_id)
    if worker_id is not None:
        stmt = stmt.where(Entry.worker_id == worker_id)
    if decision is not None:
        stmt = stmt.where(Entry.decision == Decision(decision).value)
    if since is not None:
        stmt = stmt.where(Entry.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(Entry.occurred_at < until)
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        stmt = stmt.where(tuple_(Entry.occurred_at, Entry.id) < (at, last_id))
    stmt = stmt.order_by(Entry.occurred_at.desc(), Entry.id.desc()).limit(limit + 1)
    rows = session.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1][0].occurred_at, rows[-1][0].id) if more else None
    return EntryPage(rows=rows, next_cursor=next_cursor)


def encode_cursor(occurred_at: datetime, entry_id: int) -> str:
    raw = json.dumps([occurred_at.isoformat(), entry_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, entry_id = json.loads(raw)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or not isinstance(entry_id, int) or isinstance(entry_id, bool):
            raise ValueError("bad cursor fields")
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError) as err:
        raise InvalidCursor("the cursor is invalid: use the next_cursor value of the previous page unchanged") from err
    return at, entry_id
