"""The durable outbox in edge.db: entry events and snapshots waiting for the broker, within a disk budget.

``outbox`` rows (edge/store_schema.py) hold encoded EntryEvents, deleted once
the broker has acknowledged them (edge/outbox.py drains them), within a disk
budget (``outbox_limit_bytes``): an event that would exceed it raises
:class:`OutboxFull` and is not stored (the caller logs it in full and counts
it; see edge/sync.py). Snapshots of refused faces (edge/snapshots.py) wait in
the same table, on their own topic, after their entry; they may take at most a
share of the budget, and an entry that would not fit pushes queued snapshots
out, oldest first, before it is refused.

:class:`OutboxStore` works on the engine and the write lock of
:class:`edge.store.EdgeStore`, which builds the one engine of the file and
offers these methods to its callers.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from edge.errors import StoreError
from edge.store_schema import OUTBOX_ROW_OVERHEAD, ROW_BYTES_SUM, PendingEvent, chunks, outbox, row_bytes
from models import topics
from models.messages import EntryEvent, encode
from models.snapshot import EntrySnapshot, encode_snapshot

log = logging.getLogger("edge.store")  # the name its lines had before the outbox left edge/store.py


class OutboxFull(StoreError):
    """The outbox has reached its disk budget; the event was not stored."""


# Snapshot rows are told apart by their topic (no schema change); their row id is derived from the entry's.
_SNAPSHOT_ROWS = outbox.c.topic.like("%/snapshot")


def snapshot_row_id(event_id: str | uuid.UUID) -> str:
    """The outbox id of an entry's snapshot: fixed, so queueing it twice keeps one copy."""
    return str(uuid.uuid5(uuid.UUID(str(event_id)), "snapshot"))


class OutboxStore:
    """The outbox table; writes hold ``write_lock``, the lock every write to the file holds."""

    def __init__(self, engine: Engine, write_lock: threading.Lock) -> None:
        self._engine = engine
        self._write = write_lock
        self.outbox_limit_bytes: int | None = None
        """Disk budget of the queued events (None: unbounded); StationSync sets it from the config."""
        with engine.connect() as conn:
            self._outbox_bytes = int(conn.execute(sa.select(ROW_BYTES_SUM)).scalar_one() or 0)

    def enqueue(self, event: EntryEvent) -> None:
        """Store an entry event durably (committed when this returns); a repeated event_id is ignored.

        Raises OutboxFull, storing nothing, when the event would take the
        outbox past ``outbox_limit_bytes``.
        """
        self.enqueue_many([event])

    def enqueue_many(self, events: Sequence[EntryEvent]) -> None:
        """Store several events in one transaction (all or, with OutboxFull, none)."""
        rows = [
            {"event_id": str(e.event_id), "topic": topics.entry(e.station_id), "payload": encode(e)} for e in events
        ]
        if not rows:
            return
        size = sum(row_bytes(r["topic"], r["payload"]) for r in rows)
        with self._write:
            limit = self.outbox_limit_bytes
            if limit is not None and self._outbox_bytes + size > limit:
                self._drop_snapshots(self._outbox_bytes + size - limit)
            if limit is not None and self._outbox_bytes + size > limit:
                raise OutboxFull(
                    f"the outbox holds {self._outbox_bytes} bytes of its {limit}-byte budget; "
                    f"{len(rows)} event(s) of {size} bytes do not fit"
                )
            with self._engine.begin() as conn:
                inserted = conn.execute(sa.insert(outbox).prefix_with("OR IGNORE"), rows).rowcount
                if inserted == len(rows):
                    self._outbox_bytes += size
                else:  # some were queued already: count what the table holds now
                    self._outbox_bytes = int(conn.execute(sa.select(ROW_BYTES_SUM)).scalar_one() or 0)

    def enqueue_snapshot(self, snapshot: EntrySnapshot, *, max_bytes: int | None = None) -> None:
        """Queue a snapshot after its entry (committed on return); queueing it again is ignored.

        Raises OutboxFull, storing nothing, when it would take the queued
        snapshots past ``max_bytes`` or the outbox past its budget: snapshots
        never push entries out.
        """
        row = {"event_id": snapshot_row_id(snapshot.event_id), "topic": topics.snapshot(snapshot.station_id),
               "payload": encode_snapshot(snapshot)}
        size = row_bytes(row["topic"], row["payload"])
        with self._write:
            with self._engine.connect() as conn:
                if conn.execute(sa.select(outbox.c.seq).where(outbox.c.event_id == row["event_id"])).first():
                    return  # queued already (the budget checks below must not refuse a repeat)
            held = self.snapshot_bytes()
            if max_bytes is not None and held + size > max_bytes:
                raise OutboxFull(
                    f"queued snapshots take {held} bytes of the {max_bytes} they may; {size} more do not fit"
                )
            limit = self.outbox_limit_bytes
            if limit is not None and self._outbox_bytes + size > limit:
                raise OutboxFull(f"the outbox holds {self._outbox_bytes} bytes of its {limit}-byte budget")
            with self._engine.begin() as conn:
                conn.execute(sa.insert(outbox), [row])
            self._outbox_bytes += size

    def snapshot_bytes(self) -> int:
        """Disk the queued snapshots take (counted as in outbox_bytes)."""
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(ROW_BYTES_SUM).where(_SNAPSHOT_ROWS)).scalar_one() or 0)

    def _drop_snapshots(self, needed: int) -> None:
        """Make ``needed`` bytes of room by deleting queued snapshots, oldest first (the write lock is held)."""
        size = sa.func.length(outbox.c.payload) + sa.func.length(outbox.c.topic) + OUTBOX_ROW_OVERHEAD
        freed, victims = 0, []
        with self._engine.begin() as conn:
            oldest_first = sa.select(outbox.c.seq, size).where(_SNAPSHOT_ROWS).order_by(outbox.c.seq)
            for seq, n in conn.execute(oldest_first).all():
                if freed >= needed:
                    break
                victims.append(seq)
                freed += int(n)
            for chunk in chunks(victims, 500):
                conn.execute(outbox.delete().where(outbox.c.seq.in_(chunk)))
        if victims:
            self._outbox_bytes = max(0, self._outbox_bytes - freed)
            log.warning("outbox full: dropped %d queued snapshot(s) (%d bytes) to keep an entry", len(victims), freed)

    @property
    def outbox_bytes(self) -> int:
        """Disk the queued events take (payload, topic and per-row overhead), as counted against the budget."""
        return self._outbox_bytes

    def pending(self, limit: int = 100) -> list[PendingEvent]:
        """The oldest undelivered events, oldest first."""
        query = sa.select(outbox.c.event_id, outbox.c.topic, outbox.c.payload).order_by(outbox.c.seq).limit(limit)
        with self._engine.connect() as conn:
            return [(r.event_id, r.topic, bytes(r.payload)) for r in conn.execute(query)]

    def mark_delivered(self, *event_ids: str | uuid.UUID) -> int:
        """Drop events the broker acknowledged; returns how many were removed."""
        ids = [str(e) for e in event_ids]
        if not ids:
            return 0
        removed = 0
        freed = 0
        with self._write:
            with self._engine.begin() as conn:
                for chunk in chunks(ids, 500):
                    where = outbox.c.event_id.in_(chunk)
                    freed += int(conn.execute(sa.select(ROW_BYTES_SUM).where(where)).scalar_one() or 0)
                    removed += conn.execute(outbox.delete().where(where)).rowcount
            self._outbox_bytes = max(0, self._outbox_bytes - freed)
        return removed

    def depth(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one())
