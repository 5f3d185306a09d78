"""The edge's one SQLite file (``<data_dir>/edge.db``): enrollment cache, station config, and the outbox's engine.

The only edge module that builds a database engine (SQLAlchemy Core).

Durability choice: WAL journal with ``synchronous=FULL``. WAL lets the outbox
drainer read while the door loop writes; FULL makes every commit survive a
power cut, which is what the outbox promises ("an entry is never lost once
enqueue() returned"). The cost is one fsync per commit, a few ms on an SD
card, for events that happen a few times a minute. NORMAL would be
crash-safe (no corruption) but could roll back the last entries on power loss.

What it holds:

- enrollment cache: ``workers`` (one row per worker, kept as a tombstone after
  a delete so that an older upsert arriving late cannot resurrect them; with
  the worker's validity window and whether this station is on their access
  list), ``encodings`` (float32 vectors with the id of the model that made
  them) and ``meta`` (the gallery version the station holds). A worker whose
  access list leaves this station out keeps a row but no encodings here;
- ``station_config``, the server's settings for this station applied last
  (edge/station_config.py), so they hold through a restart without a broker;
- the outbox: :class:`edge.outbox_store.OutboxStore` (``EdgeStore.outbox``) on
  the same engine and write lock; EdgeStore passes its methods through
  (``enqueue``, ``pending``, ``mark_delivered``...), so callers hold one store.

Schema version 2 added the validity window and access flag; a version-1 file
is upgraded in place when opened (a table added since, like station_config,
is simply created).
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.matcher import Gallery
from edge.errors import StoreError
from edge.outbox_store import OutboxFull, OutboxStore, snapshot_row_id  # noqa: F401  (importable from here too)
from edge.store_schema import (  # noqa: F401  (OUTBOX_ROW_OVERHEAD, PendingEvent: importable from here too)
    DB_NAME,
    OUTBOX_ROW_OVERHEAD,
    SCHEMA_VERSION,
    PendingEvent,
    chunks,
    encodings,
    meta,
    metadata,
    set_pragmas,
    station_config,
    upgrade_from_1,
    workers,
)
from models.encoding import FACE_MODEL_ID, decode_vector
from models.messages import EntryEvent, GalleryChange, GalleryOp
from models.snapshot import EntrySnapshot


class EdgeStore:
    """Thread-safe access to edge.db; writes are serialised by one lock (one process owns the file)."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self._engine = engine
        self._write = threading.Lock()  # held by every write to the file, the outbox's too
        self.outbox = OutboxStore(engine, self._write)

    @classmethod
    def open(cls, data_dir: str | Path) -> "EdgeStore":
        folder = Path(data_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the data folder {folder}: {err.strerror or err}") from err
        path = folder / DB_NAME
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})
        sa.event.listen(engine, "connect", set_pragmas)
        try:
            metadata.create_all(engine)
            with engine.begin() as conn:
                found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                if found is None:
                    conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(found) == 1:
                    upgrade_from_1(conn)
                elif int(found) != SCHEMA_VERSION:
                    raise StoreError(f"{path} has schema version {found}; this agent reads {SCHEMA_VERSION}")
        except sa.exc.SQLAlchemyError as err:
            engine.dispose()
            raise StoreError(f"cannot open the edge database {path}: {err}") from err
        return cls(path, engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- enrollment cache -------------------------------------------------------
    def gallery_version(self) -> int:
        with self._engine.connect() as conn:
            return _held_version(conn)

    def apply_changes(
        self,
        changes: Sequence[GalleryChange],
        *,
        snapshot: bool,
        latest_version: int | None,
        station_id: str | None = None,
    ) -> int:
        """Apply changes in one transaction and return the gallery version now held.

        Per worker, a change not newer than what is held is ignored, so
        replays and out-of-order arrivals are harmless. A change whose station
        list leaves out ``station_id`` keeps no encodings here (``station_id``
        None: station lists are not applied). ``snapshot`` replaces
        the whole cache (except workers changed after ``latest_version``, which
        arrived live meanwhile) and sets the version to ``latest_version``. Otherwise the
        held version becomes max(held, latest_version); pass None to apply
        changes without advancing it (a live change that skipped versions).
        """
        with self._write, self._engine.begin() as conn:
            if snapshot:
                if latest_version is None:
                    raise ValueError("a snapshot must say which version it is")
                # Rows newer than the snapshot came live while it was being paged (a deletion,
                # say): they stay, and the snapshot's older copy of those workers is ignored.
                # Unless the snapshot is older than what we hold: then the server's history was
                # reset, and every row of the old history goes.
                keep_newer = latest_version >= _held_version(conn)
                cutoff = latest_version if keep_newer else 2**63 - 1
                older = sa.select(workers.c.worker_id).where(workers.c.version <= cutoff)
                conn.execute(encodings.delete().where(encodings.c.worker_id.in_(older)))
                conn.execute(workers.delete().where(workers.c.version <= cutoff))
            held: dict[str, int] = {}
            ids = list({c.worker_id for c in changes})
            for chunk in chunks(ids, 500):
                rows = conn.execute(sa.select(workers.c.worker_id, workers.c.version).where(workers.c.worker_id.in_(chunk)))
                held.update({r.worker_id: r.version for r in rows})
            # Only each worker's newest change matters (an upsert carries the whole state): apply those in bulk.
            newest: dict[str, GalleryChange] = {}
            for change in changes:
                current = newest.get(change.worker_id)
                floor = current.version if current is not None else held.get(change.worker_id, -1)
                if change.version > floor:
                    newest[change.worker_id] = change
            _apply_newest(conn, list(newest.values()), existing=set(held), station_id=station_id)
            version = _held_version(conn)
            if snapshot:
                version = int(latest_version)  # type: ignore[arg-type]
            elif latest_version is not None:
                version = max(version, int(latest_version))
            _set_version(conn, version)
            return version

    def load_gallery(self, now: datetime | None = None) -> Gallery:
        """Encodings made by FACE_MODEL_ID of the workers who may enter here at ``now``, as an immutable Gallery.

        Leaves out suspended and deleted workers, those whose access list
        leaves this station out, and those outside their validity window.
        """
        t = _epoch(now)
        query = (
            sa.select(encodings.c.worker_id, encodings.c.vector)
            .join(workers, workers.c.worker_id == encodings.c.worker_id)
            .where(
                workers.c.active.is_(True),
                workers.c.deleted.is_(False),
                workers.c.allowed.is_(True),
                sa.or_(workers.c.valid_from.is_(None), workers.c.valid_from <= t),
                sa.or_(workers.c.valid_until.is_(None), workers.c.valid_until > t),
                encodings.c.model == FACE_MODEL_ID,
            )
            .order_by(encodings.c.worker_id, encodings.c.id)
        )
        with self._engine.connect() as conn:
            version = _held_version(conn)
            entries = [(r.worker_id, np.frombuffer(r.vector, dtype="<f4").astype(np.float32)) for r in conn.execute(query)]
        return Gallery(entries, version=version)

    def next_validity_change(self, now: datetime | None = None) -> datetime | None:
        """The next time a validity window opens or closes (the gallery must be reloaded then), or None."""
        t = _epoch(now)
        live = sa.and_(workers.c.deleted.is_(False), workers.c.active.is_(True), workers.c.allowed.is_(True))
        with self._engine.connect() as conn:
            starts = conn.execute(sa.select(sa.func.min(workers.c.valid_from)).where(live, workers.c.valid_from > t))
            first_start = starts.scalar()
            ends = conn.execute(sa.select(sa.func.min(workers.c.valid_until)).where(live, workers.c.valid_until > t))
            first_end = ends.scalar()
        times = [x for x in (first_start, first_end) if x is not None]
        return datetime.fromtimestamp(min(times), timezone.utc) if times else None

    def display_names(self) -> dict[str, str]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(workers.c.worker_id, workers.c.display_name).where(workers.c.deleted.is_(False)))
            return {r.worker_id: r.display_name for r in rows}

    def worker(self, worker_id: str) -> dict | None:
        """One worker's cache row and encoding count (for tests and diagnostics)."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(workers).where(workers.c.worker_id == worker_id)).mappings().first()
            if row is None:
                return None
            n = conn.execute(sa.select(sa.func.count()).where(encodings.c.worker_id == worker_id)).scalar_one()
            return {**row, "encodings": int(n)}

    # -- the server's settings for this station (edge/station_config.py) -------------
    def station_config(self) -> tuple[int, str] | None:
        """(version, payload) of the station config applied last, or None if none ever was."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(station_config.c.version, station_config.c.payload)).first()
        return (int(row.version), str(row.payload)) if row is not None else None

    def save_station_config(self, version: int, payload: str) -> None:
        """Keep the applied station config (committed on return), replacing the one before."""
        with self._write, self._engine.begin() as conn:
            conn.execute(station_config.delete())
            conn.execute(station_config.insert().values(id=1, version=version, payload=payload))

    # -- the outbox (edge/outbox_store.py), passed through ---------------------------
    @property
    def outbox_limit_bytes(self) -> int | None:
        """Disk budget of the queued events (None: unbounded); StationSync sets it from the config."""
        return self.outbox.outbox_limit_bytes

    @outbox_limit_bytes.setter
    def outbox_limit_bytes(self, value: int | None) -> None:
        self.outbox.outbox_limit_bytes = value

    @property
    def outbox_bytes(self) -> int:
        return self.outbox.outbox_bytes

    def enqueue(self, event: EntryEvent) -> None:
        self.outbox.enqueue(event)

    def enqueue_many(self, events: Sequence[EntryEvent]) -> None:
        self.outbox.enqueue_many(events)

    def enqueue_snapshot(self, snapshot: EntrySnapshot, *, max_bytes: int | None = None) -> None:
        self.outbox.enqueue_snapshot(snapshot, max_bytes=max_bytes)

    def snapshot_bytes(self) -> int:
        return self.outbox.snapshot_bytes()

    def pending(self, limit: int = 100) -> list[PendingEvent]:
        return self.outbox.pending(limit)

    def mark_delivered(self, *event_ids: str | uuid.UUID) -> int:
        return self.outbox.mark_delivered(*event_ids)

    def depth(self) -> int:
        return self.outbox.depth()


def _apply_newest(
    conn: Connection, changes: list[GalleryChange], *, existing: set[str], station_id: str | None
) -> None:
    """Write each worker's row and encodings from its newest change (a few statements for any number of workers)."""
    rows, vectors = [], []
    for change in changes:
        deleted = change.op == GalleryOp.DELETE
        allowed = not deleted and (station_id is None or change.stations is None or station_id in change.stations)
        rows.append({
            "b_worker_id": change.worker_id,
            "display_name": "" if deleted else change.display_name,
            "active": False if deleted else change.active,
            "deleted": deleted,
            "version": change.version,
            "valid_from": None if change.valid_from is None else change.valid_from.timestamp(),
            "valid_until": None if change.valid_until is None else change.valid_until.timestamp(),
            "allowed": allowed,
        })
        # An upsert carries the worker's complete encodings; a delete removes them (the tombstone keeps the
        # version), and so does an access list without this station: no face data where it cannot be used.
        if allowed:
            vectors += [
                {"worker_id": change.worker_id, "model": enc.model, "vector": _vector_bytes(enc.data)}
                for enc in change.encodings
            ]
    for chunk in chunks([c.worker_id for c in changes], 500):
        conn.execute(encodings.delete().where(encodings.c.worker_id.in_(chunk)))
    updates = [r for r in rows if r["b_worker_id"] in existing]
    inserts = [{"worker_id": r["b_worker_id"], **{k: v for k, v in r.items() if k != "b_worker_id"}}
               for r in rows if r["b_worker_id"] not in existing]
    if updates:
        conn.execute(workers.update().where(workers.c.worker_id == sa.bindparam("b_worker_id")), updates)
    if inserts:
        conn.execute(workers.insert(), inserts)
    if vectors:
        conn.execute(encodings.insert(), vectors)


def _vector_bytes(data: str) -> bytes:
    return decode_vector(data).astype("<f4").tobytes()


def _epoch(now: datetime | None) -> float:
    return (now or datetime.now(timezone.utc)).timestamp()


def _held_version(conn: Connection) -> int:
    value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "gallery_version")).scalar()
    return int(value) if value is not None else 0


def _set_version(conn: Connection, version: int) -> None:
    updated = conn.execute(meta.update().where(meta.c.key == "gallery_version").values(value=str(version))).rowcount
    if not updated:
        conn.execute(meta.insert().values(key="gallery_version", value=str(version)))
