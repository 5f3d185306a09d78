"""The entry-log audit query: who entered where and when, filtered, newest first, keyset-paged.

One ``SELECT`` serves the audit page, ``GET /api/entries`` and the CSV export
(server/export.py): entries outer-joined to their worker (name, category) and
station (name, time zone), filtered, ordered by ``(occurred_at desc, id desc)``.

Pages continue after an opaque cursor (the last row's ``(occurred_at, id)``,
server/entries.py), never with OFFSET, so page 5,000 costs what page 1 costs
and rows inserted while someone pages neither repeat nor hide older ones. The
time range is ``[since, until)`` on the station's clock (``occurred_at``),
stored in UTC; callers pass timezone-aware datetimes.

Indexes that keep each filter fast on millions of rows (server/tables.py), each
walked newest first until a page is full: ``(occurred_at, id)`` for no filter,
a time range or a category; ``(station_id, occurred_at)``; ``(worker_id,
occurred_at)``; ``(decision, occurred_at, id)`` and ``(kind, occurred_at, id)``
for the rare decisions and kinds (partial on PostgreSQL, migration 0005).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from models.messages import Decision, EventKind
from server.entries import MAX_PAGE, decode_cursor, encode_cursor
from server.tables import WORKER_CATEGORIES, Entry, Station, Worker

__all__ = [
    "FIELDS", "MAX_PAGE", "EntryFilter", "EntryLogPage", "EntryLogRow", "entry_log_page", "entry_log_select", "row_of",
]


@dataclass(frozen=True)
class EntryFilter:
    """What the auditor asked for; ``None`` means "any". ``since`` inclusive, ``until`` exclusive."""

    station_id: str | None = None
    worker_id: str | None = None
    category: str | None = None
    decision: Decision | None = None
    kind: EventKind | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.category is not None and self.category not in WORKER_CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}: use one of {', '.join(WORKER_CATEGORIES)}")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware (e.g. 2025-05-01T00:00:00+08:00)")
        # Normalise enum members so equal filters compare (and are audited) alike.
        if self.decision is not None:
            object.__setattr__(self, "decision", Decision(self.decision))
        if self.kind is not None:
            object.__setattr__(self, "kind", EventKind(self.kind))

    def as_dict(self) -> dict[str, str]:
        """The filters that are set, as text (for the audit log and links)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = value.isoformat() if isinstance(value, datetime) else getattr(value, "value", str(value))
        return out


@dataclass(frozen=True)
class EntryLogRow:
    """One entry as the audit page and the export show it. Times are UTC; show them in ``station_time_zone``."""

    id: int
    event_id: str
    occurred_at: datetime
    """The station's clock when the door decided."""
    received_at: datetime
    """The server's clock when the event was stored."""
    station_id: str
    station_name: str | None
    """None when the station was removed after the event."""
    station_time_zone: str | None
    worker_id: str | None
    worker_name: str | None
    """None when nobody was recognised, or the worker was deleted (or anonymised)."""
    worker_category: str | None
    kind: str
    decision: str
    reason: str
    distance: float | None
    second_distance: float | None
    frames: int | None
    face_px: int | None
    decision_ms: float | None
    gallery_version: int
    liveness: str | None
    """off, pending, passed or failed (entry/2); None for older stations and QR entries."""
    blinks: int | None


@dataclass(frozen=True)
class EntryLogPage:
    rows: Sequence[EntryLogRow]
    """Newest first."""
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; None on the last page."""


FIELDS: tuple[str, ...] = tuple(EntryLogRow.__dataclass_fields__)
_JOINED = {
    "station_name": Station.name,
    "station_time_zone": Station.time_zone,
    "worker_name": Worker.name,
    "worker_category": Worker.category,
}
# Selected in EntryLogRow's field order: a result row is that row's values by position (the export relies on it).
COLUMNS = [_JOINED[name].label(name) if name in _JOINED else getattr(Entry, name) for name in FIELDS]
_ORDER = (Entry.occurred_at.desc(), Entry.id.desc())


def entry_log_select(filters: EntryFilter, *, after: str | None = None) -> Select[tuple[object, ...]]:
    """The filtered, ordered query (no limit); ``after``: continue after this cursor.

    Raises server.entries.InvalidCursor for a cursor this server did not make.
    """
    stmt = (
        select(*COLUMNS)
        .select_from(Entry)
        .outerjoin(Worker, Worker.worker_id == Entry.worker_id)
        .outerjoin(Station, Station.station_id == Entry.station_id)
    )
    f = filters
    if f.station_id is not None:
        stmt = stmt.where(Entry.station_id == f.station_id)
    if f.worker_id is not None:
        stmt = stmt.where(Entry.worker_id == f.worker_id)
    if f.category is not None:
        stmt = stmt.where(Worker.category == f.category)
    if f.decision is not None:
        stmt = stmt.where(Entry.decision == Decision(f.decision).value)
    if f.kind is not None:
        stmt = stmt.where(Entry.kind == EventKind(f.kind).value)
    if f.since is not None:
        stmt = stmt.where(Entry.occurred_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(Entry.occurred_at < f.until)
    if after is not None:
        at, last_id = decode_cursor(after)
        # A row comparison: both databases use it as one range condition on the (…, occurred_at, id) indexes.
        stmt = stmt.where(tuple_(Entry.occurred_at, Entry.id) < (at, last_id))
    return stmt.order_by(*_ORDER)


def row_of(raw: object) -> EntryLogRow:
    """An EntryLogRow from a result row of :func:`entry_log_select` (same order)."""
    return EntryLogRow(*raw)  # type: ignore[misc]


def entry_log_page(
    *, session: Session, filters: EntryFilter = EntryFilter(), limit: int = 50, cursor: str | None = None
) -> EntryLogPage:
    """One page of the filtered entry log, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    result = session.execute(entry_log_select(filters, after=cursor).limit(limit + 1)).all()
    rows = [row_of(r) for r in result[:limit]]
    more = len(result) > limit
    next_cursor = encode_cursor(rows[-1].occurred_at, rows[-1].id) if more else None
    return EntryLogPage(rows=rows, next_cursor=next_cursor)
