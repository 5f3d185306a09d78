"""Unique workers: how many different workers visited in a time range, without reading their visits.

usage_visitors (migration 0006, kept by triggers) holds each worker's first and
last visit, per station and at any station (``station_id`` ""). A worker
visited in ``[since, until)`` if their first or last visit lies in it; if
both lie outside but around it, one index probe into the entries
(``ix_entries_worker_occurred``) decides. So the cost is one small row per
worker, and a probe only for workers active both before and after the range
(none for a range that ends now, the dashboard's default).

A worker whose entries inside the range were purged or anonymised by
retention still counts when a first or last visit says so, not otherwise.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, func, literal, or_, select, true
from sqlalchemy.orm import Session

from server.tables import VISIT_KINDS, Entry, UsageVisitor

ANY_STATION = ""


def unique_workers(session: Session, since: datetime, until: datetime, station_id: str | None = None) -> int:
    """Different workers with at least one visit in ``[since, until)`` (at ``station_id`` if given)."""
    v = UsageVisitor
    around = (v.station_id == (station_id or ANY_STATION), v.last_visit_at >= since, v.first_visit_at < until)
    sure = select(func.count()).where(*around, or_(v.first_visit_at >= since, v.last_visit_at < until))
    # Active before and after: one probe each. On PostgreSQL a LATERAL ... LIMIT 1 keeps it a probe per worker
    # (an EXISTS may be planned as a hash of every visit in the range, seconds on a busy month).
    visit = (
        select(literal(1))
        .where(
            Entry.worker_id == v.worker_id, Entry.occurred_at >= since, Entry.occurred_at < until,
            Entry.decision == "granted", Entry.kind.in_(VISIT_KINDS),
        )
        .limit(1)
    )
    if station_id:
        visit = visit.where(Entry.station_id == station_id)
    spanning = select(func.count()).where(*around, v.first_visit_at < since, v.last_visit_at >= until)
    if session.get_bind().dialect.name == "postgresql":
        spanning = spanning.select_from(v).join(visit.lateral("visit"), true())
    else:  # SQLite has no LATERAL, and runs a correlated EXISTS as a probe per row anyway
        spanning = spanning.where(exists(visit))
    return int(session.scalar(sure) or 0) + int(session.scalar(spanning) or 0)
