"""Snapshots of refused faces on the server: checked, stored next to their entry, shown to auditors.

A station sends one (``snapshot/1``, models/snapshot.py) only where its
``snapshots.enabled`` is on; the server has no per-station switch of its own
(the stations table has none), so that edge setting is the control, and the
server adds what it can check itself: the image must decode as a picture of at
most MAX_SNAPSHOT_PX pixels (a face crop, never a camera frame), and it must
belong to an entry already stored from the same station that was *refused*
(denied or spoof). A snapshot that fails any of these is refused
(:class:`SnapshotRefused`), never stored. Storing is idempotent on ``event_id``.

Stations queue a snapshot after its entry, and the ingest stores a station's
messages in the order they came, so the entry is there first. Rows are deleted
by the retention job (server/retention.py): after ``retention_snapshots_days``,
and with their entry when it is purged or anonymised; and by :func:`forget_worker`
when a worker named by the entry is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.imaging import ImageError, load_image
from models.messages import Decision
from models.snapshot import MAX_SNAPSHOT_PX, EntrySnapshot
from server.tables import Entry, EntrySnapshot as SnapshotRow, utcnow

REFUSED_DECISIONS = (Decision.DENIED.value, Decision.SPOOF.value)


class SnapshotRefused(ValueError):
    """The snapshot is well-formed but the server will not keep it; the message says why."""


def check_image(snapshot: EntrySnapshot) -> bytes:
    """The JPEG bytes if they decode as a small image; SnapshotRefused otherwise."""
    jpeg = snapshot.jpeg
    try:
        image = load_image(jpeg)
    except ImageError as err:
        raise SnapshotRefused(f"the image does not decode: {err}") from err
    height, width = image.shape[:2]
    if max(height, width) > MAX_SNAPSHOT_PX:
        raise SnapshotRefused(f"the image is {width}x{height} pixels; a snapshot is at most {MAX_SNAPSHOT_PX}")
    return jpeg


def store_snapshot(
    *, session: Session, snapshot: EntrySnapshot, jpeg: bytes, received_at: datetime | None = None
) -> bool:
    """Store a checked snapshot (``jpeg`` from :func:`check_image`) and commit; True if new, False if held already.

    Raises SnapshotRefused when no refused entry of the snapshot's station has its event id.
    """
    event_id = str(snapshot.event_id)
    entry = session.execute(select(Entry.station_id, Entry.decision).where(Entry.event_id == event_id)).first()
    if entry is None:
        raise SnapshotRefused(f"no entry {event_id} is stored (a snapshot follows its entry)")
    if entry.station_id != snapshot.station_id:
        raise SnapshotRefused(f"entry {event_id} is from station {entry.station_id!r}, not {snapshot.station_id!r}")
    if entry.decision not in REFUSED_DECISIONS:
        raise SnapshotRefused(f"entry {event_id} was {entry.decision}: only refused attempts may have a snapshot")
    row = {"event_id": event_id, "station_id": snapshot.station_id, "jpeg": jpeg,
           "received_at": received_at or utcnow()}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = pg_insert(SnapshotRow).values(**row).on_conflict_do_nothing(index_elements=["event_id"])
    else:
        stmt = sqlite_insert(SnapshotRow).values(**row).on_conflict_do_nothing(index_elements=["event_id"])
    new = bool(session.execute(stmt).rowcount)
    session.commit()
    return new


def with_snapshots(session: Session, event_ids: Iterable[str]) -> set[str]:
    """Which of these entries have a snapshot (one indexed look-up for a page of rows)."""
    ids = list(event_ids)
    if not ids:
        return set()
    return set(session.scalars(select(SnapshotRow.event_id).where(SnapshotRow.event_id.in_(ids))))


def snapshot_of(session: Session, event_id: str) -> SnapshotRow | None:
    return session.get(SnapshotRow, event_id)


def forget_worker(session: Session, worker_id: str) -> int:
    """Delete the snapshots of entries that name ``worker_id`` (not committed here); returns how many.

    Most snapshots are of strangers (no worker), but a ``spoof`` entry names the
    worker whose face matched (their photo held up, or they themselves failing
    the liveness check), and a refused QR-then-face attempt names the worker
    whose code was shown: those pictures may show that worker, so they go when
    the worker's face data goes (server.gallery.delete_worker).
    """
    named = select(Entry.event_id).where(Entry.worker_id == worker_id)
    return session.execute(delete(SnapshotRow).where(SnapshotRow.event_id.in_(named))).rowcount or 0
