"""The edge's one SQLite file (``<data_dir>/edge.db``): enrollment cache and entry outbox.

The only edge module that builds a database engine (SQLAlchemy Core).

Durability choice: WAL journal with ``synchronous=FULL``. WAL lets the outbox
drainer read while the door loop writes; FULL makes every commit survive a
power cut, which is what the outbox promises ("an entry is never lost once
enqueue() returned"). The cost is one fsync per commit, a few ms on an SD
card, for events that happen a few times a minute. NORMAL would be
crash-safe (no corruption) but could roll back the last entries on power loss.

Two parts:

- enrollment cache: ``workers`` (one row per worker, kept as a tombstone after
  a delete so that an older upsert arriving late cannot resurrect them),
  ``encodings`` (float32 vectors with the id of the model that made them) and
  ``meta`` (the gallery version the station holds);
- outbox: ``outbox`` rows of encoded EntryEvents, deleted once the broker has
  acknowledged them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.matcher import Gallery
from edge.errors import StoreError
from models import topics
from models.encoding import FACE_MODEL_ID, decode_vector
from models.messages import EntryEvent, GalleryChange, GalleryOp, encode

log = logging.getLogger(__name__)

DB_NAME = "edge.db"
SCHEMA_VERSION = 1

metadata = sa.MetaData()

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, default=""),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.BigInteger, nullable=False),
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

PendingEvent = tuple[str, str, bytes]
"""(event_id, topic, payload) of an entry event not yet acknowledged by the broker."""


def _set_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class EdgeStore:
    """Thread-safe access to edge.db; writes are serialised by one lock (one process owns the file)."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self._engine = engine
        self._write = threading.Lock()

    @classmethod
    def open(cls, data_dir: str | Path) -> "EdgeStore":
        folder = Path(data_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the data folder {folder}: {err.strerror or err}") from err
        path = folder / DB_NAME
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})
        sa.event.listen(engine, "connect", _set_pragmas)
        try:
            metadata.create_all(engine)
            with engine.begin() as conn:
                found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                if found is None:
                    conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
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
        self, changes: Sequence[GalleryChange], *, snapshot: bool, latest_version: int | None
    ) -> int:
        """Apply changes in one transaction and return the gallery version now held.

        Per worker, a change not newer than what is held is ignored, so
        replays and out-of-order arrivals are harmless. ``snapshot`` replaces
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
            for chunk in _chunks(ids, 500):
                rows = conn.execute(sa.select(workers.c.worker_id, workers.c.version).where(workers.c.worker_id.in_(chunk)))
                held.update({r.worker_id: r.version for r in rows})
            for change in sorted(changes, key=lambda c: c.version):
                if held.get(change.worker_id, -1) >= change.version:
                    continue
                _apply_one(conn, change, exists=change.worker_id in held)
                held[change.worker_id] = change.version
            version = _held_version(conn)
            if snapshot:
                version = int(latest_version)  # type: ignore[arg-type]
            elif latest_version is not None:
                version = max(version, int(latest_version))
            _set_version(conn, version)
            return version

    def load_gallery(self) -> Gallery:
        """Active workers' encodings made by FACE_MODEL_ID, as an immutable Gallery."""
        query = (
            sa.select(encodings.c.worker_id, encodings.c.vector)
            .join(workers, workers.c.worker_id == encodings.c.worker_id)
            .where(workers.c.active.is_(True), workers.c.deleted.is_(False), encodings.c.model == FACE_MODEL_ID)
            .order_by(encodings.c.worker_id, encodings.c.id)
        )
        with self._engine.connect() as conn:
            version = _held_version(conn)
            entries = [(r.worker_id, np.frombuffer(r.vector, dtype="<f4").astype(np.float32)) for r in conn.execute(query)]
        return Gallery(entries, version=version)

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

    # -- outbox -------------------------------------------------------------------
    def enqueue(self, event: EntryEvent) -> None:
        """Store an entry event durably (committed when this returns); a repeated event_id is ignored."""
        payload = encode(event)
        topic = topics.entry(event.station_id)
        stmt = sa.insert(outbox).values(event_id=str(event.event_id), topic=topic, payload=payload)
        with self._write, self._engine.begin() as conn:
            conn.execute(stmt.prefix_with("OR IGNORE"))

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
        with self._write, self._engine.begin() as conn:
            for chunk in _chunks(ids, 500):
                removed += conn.execute(outbox.delete().where(outbox.c.event_id.in_(chunk))).rowcount
        return removed

    def depth(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one())


def _apply_one(conn: Connection, change: GalleryChange, *, exists: bool) -> None:
    deleted = change.op == GalleryOp.DELETE
    values = {
        "display_name": "" if deleted else change.display_name,
        "active": False if deleted else change.active,
        "deleted": deleted,
        "version": change.version,
    }
    if exists:
        conn.execute(workers.update().where(workers.c.worker_id == change.worker_id).values(**values))
    else:
        conn.execute(workers.insert().values(worker_id=change.worker_id, **values))
    # An upsert carries the worker's complete encodings; a delete removes them (the tombstone keeps the version).
    conn.execute(encodings.delete().where(encodings.c.worker_id == change.worker_id))
    if not deleted and change.encodings:
        conn.execute(
            encodings.insert(),
            [
                {"worker_id": change.worker_id, "model": enc.model, "vector": decode_vector(enc.data).astype("<f4").tobytes()}
                for enc in change.encodings
            ],
        )


def _held_version(conn: Connection) -> int:
    value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "gallery_version")).scalar()
    return int(value) if value is not None else 0


def _set_version(conn: Connection, version: int) -> None:
    updated = conn.execute(meta.update().where(meta.c.key == "gallery_version").values(value=str(version))).rowcount
    if not updated:
        conn.execute(meta.insert().values(key="gallery_version", value=str(version)))


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
