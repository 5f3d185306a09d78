"""The gallery: who may enter, and its versioned change log.

Every change to a worker that stations care about (enrolled, suspended,
reinstated, validity window or station list set, deleted) appends a row to ``gallery_changes``; the row's
autoincrement key is the new gallery version, strictly greater than any
before. A change sent to a station is built from the worker's *current* state
(complete encodings, not a delta; a deleted worker gives ``op=delete`` with no
encodings), so replaying or reordering changes is always safe.

Versions are issued in commit order: SQLite has a single writer, and on
PostgreSQL the log table is locked (EXCLUSIVE, reads still allowed) until the
transaction commits, so a station that has seen version N can never later
miss a smaller version committed after it.

All functions take ``session=`` and, for writes, commit before they return:
a change may be published only once it is durable.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.encoding import EMBEDDING_DIM, FaceEncoding
from models.messages import (
    MAX_CHANGES_PER_REPLY,
    MAX_ENCODINGS_PER_WORKER,
    MAX_STATIONS_PER_WORKER,
    GalleryChange,
    GalleryOp,
)
from models.topics import check_station_id
from server.errors import Conflict, NotFound
from server.snapshots import forget_worker
from server.tables import FaceSample, GalleryChangeRow, Worker, WorkerStatus


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """A 128-d encoding as the 512 bytes stored in face_samples.vector."""
    arr = np.asarray(vector, dtype="<f4").reshape(-1)
    if arr.shape != (EMBEDDING_DIM,):
        raise ValueError(f"an encoding has {EMBEDDING_DIM} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("an encoding must not contain NaN or infinity")
    return arr.tobytes()


def vector_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def get_worker(*, session: Session, worker_id: str) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker with id {worker_id!r}")
    return worker


def list_workers(*, session: Session) -> list[tuple[Worker, int]]:
    """Every worker with their number of face samples, by name (the samples themselves are not loaded)."""
    counts = (
        select(FaceSample.worker_id, func.count().label("n")).group_by(FaceSample.worker_id).subquery("sample_counts")
    )
    stmt = (
        select(Worker, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.worker_id == Worker.worker_id)
        .order_by(Worker.name, Worker.worker_id)
    )
    return [(worker, int(n)) for worker, n in session.execute(stmt)]


def latest_version(*, session: Session) -> int:
    """The newest gallery version issued, 0 when nothing has happened yet."""
    return int(session.scalar(select(func.coalesce(func.max(GalleryChangeRow.version), 0))) or 0)


def enroll_worker(
    *,
    session: Session,
    name: str,
    vectors: Sequence[np.ndarray],
    model_id: str,
    phone: str | None = None,
    worker_id: str | None = None,
    category: str | None = None,
    employer: str | None = None,
    valid_until: datetime | None = None,
    enrollment_session_id: int | None = None,
    enrolled_by: str | None = None,
    related_rows: Sequence[object] = (),
) -> tuple[Worker, GalleryChange]:
    """Create a worker with their face encodings and append an upsert change.

    ``related_rows`` (e.g. the worker's consent and photo, which refer to
    ``worker_id``, default a new random id) are added once the worker's row
    exists and committed in the same transaction (server/enrolling.py).
    """
    if not 1 <= len(vectors) <= MAX_ENCODINGS_PER_WORKER:
        raise ValueError(f"a worker has 1 to {MAX_ENCODINGS_PER_WORKER} encodings, got {len(vectors)}")
    blobs = [vector_to_bytes(v) for v in vectors]
    if phone is not None and session.scalar(select(Worker.worker_id).where(Worker.phone == phone)) is not None:
        raise Conflict(f"a worker with phone number {phone} is already enrolled")
    worker = Worker(
        worker_id=worker_id or uuid.uuid4().hex, name=name, phone=phone, status=WorkerStatus.ACTIVE.value,
        category=category, employer=employer, valid_until=valid_until,
        enrollment_session_id=enrollment_session_id, enrolled_by=enrolled_by,
    )
    worker.samples = [FaceSample(model_id=model_id, vector=blob) for blob in blobs]
    session.add(worker)
    try:
        session.flush()
        if related_rows:  # after the worker's row: they refer to it (the ORM does not order them otherwise)
            session.add_all(related_rows)
            session.flush()
        version = _append_change(session, GalleryOp.UPSERT, worker.worker_id)
        session.commit()
    except IntegrityError as err:  # a concurrent enrollment took the phone number
        session.rollback()
        raise Conflict(f"a worker with phone number {phone} is already enrolled") from err
    return worker, _change_for(worker, worker.worker_id, version)


def set_status(*, session: Session, worker_id: str, status: WorkerStatus) -> tuple[Worker, GalleryChange]:
    """Suspend or reinstate; stations keep a suspended worker's face but never grant them.

    Always appends a change, even if the status was already ``status``: a
    repeated request simply re-broadcasts the worker's state.
    """
    worker = get_worker(session=session, worker_id=worker_id)
    worker.status = WorkerStatus(status).value
    session.flush()
    version = _append_change(session, GalleryOp.UPSERT, worker_id)
    session.commit()
    return worker, _change_for(worker, worker_id, version)


def set_access(
    *,
    session: Session,
    worker_id: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
    stations: Sequence[str] | None,
    commit: bool = True,
) -> tuple[Worker, GalleryChange]:
    """Set when and where a worker may enter (None: no limit); appends an upsert change.

    Stations outside the list keep no face data of the worker; outside the
    window every station refuses them. Each id in ``stations`` must be a valid
    station id (it need not be registered yet). ``commit=False`` leaves the
    commit to the caller (one transaction with its other changes); broadcast
    the change only after that commit.
    """
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ValueError("valid_until must be later than valid_from")
    listed = None if stations is None else sorted({check_station_id(s) for s in stations})
    if listed is not None and len(listed) > MAX_STATIONS_PER_WORKER:
        raise ValueError(f"a worker may be limited to at most {MAX_STATIONS_PER_WORKER} stations")
    worker = get_worker(session=session, worker_id=worker_id)
    worker.valid_from, worker.valid_until, worker.stations = valid_from, valid_until, listed
    session.flush()
    version = _append_change(session, GalleryOp.UPSERT, worker_id)
    if commit:
        session.commit()
    return worker, _change_for(worker, worker_id, version)


def delete_worker(*, session: Session, worker_id: str) -> GalleryChange:
    """Delete the worker's row, name, phone and face samples; append a delete change.

    Entry logs keep the (random) worker id, so audits still group a person's
    entries without any personal data left on the server. Snapshots of refused
    attempts that name the worker (a spoof with their face, their QR with another
    face) may show them, so they go too (server.snapshots.forget_worker).
    """
    worker = get_worker(session=session, worker_id=worker_id)
    session.delete(worker)
    forget_worker(session, worker_id)
    session.flush()
    version = _append_change(session, GalleryOp.DELETE, worker_id)
    session.commit()
    return _change_for(None, worker_id, version)


def changes_since(
    *,
    session: Session,
    version: int,
    limit: int,
    up_to: int | None = None,
    current_only: bool = False,
) -> list[GalleryChange]:
    """The latest change of every worker changed after ``version``, oldest first.

    Each worker appears once, at the version of its newest change in
    ``(version, up_to]``, carrying its current state. Paging: call again with
    the last returned change's version. ``current_only`` leaves out deleted
    workers (for a snapshot, which replaces a station's whole gallery).
    """
    if not 1 <= limit <= MAX_CHANGES_PER_REPLY:
        raise ValueError(f"limit must be 1..{MAX_CHANGES_PER_REPLY}")
    newest = func.max(GalleryChangeRow.version).label("newest")
    stmt = select(GalleryChangeRow.worker_id, newest).where(GalleryChangeRow.version > version)
    if up_to is not None:
        stmt = stmt.where(GalleryChangeRow.version <= up_to)
    if current_only:
        stmt = stmt.join(Worker, Worker.worker_id == GalleryChangeRow.worker_id)
    stmt = stmt.group_by(GalleryChangeRow.worker_id).order_by(newest).limit(limit)
    # Versions are read before the workers' state, so the state sent is never older than its version.
    rows = session.execute(stmt).all()
    if not rows:
        return []
    ids = [worker_id for worker_id, _ in rows]
    workers = {w.worker_id: w for w in session.scalars(select(Worker).where(Worker.worker_id.in_(ids)))}
    # The samples as plain rows: a full snapshot carries tens of thousands of them, and building
    # ORM objects and re-validating vectors that were checked when stored took most of its time.
    samples: dict[str, list[FaceEncoding]] = {}
    stmt_samples = (
        select(FaceSample.worker_id, FaceSample.model_id, FaceSample.vector)
        .where(FaceSample.worker_id.in_(ids))
        .order_by(FaceSample.id)
    )
    for worker_id, model_id, blob in session.execute(stmt_samples):
        samples.setdefault(worker_id, []).append(_stored_encoding(model_id, blob))
    changes = [
        _change_for(workers.get(worker_id), worker_id, int(v), encodings=samples.get(worker_id, []))
        for worker_id, v in rows
    ]
    if current_only:
        changes = [c for c in changes if c.op is GalleryOp.UPSERT]
    return changes


def _append_change(session: Session, op: GalleryOp, worker_id: str) -> int:
    if session.get_bind().dialect.name == "postgresql":
        # Serialise version issue with commit order (see the module docstring).
        session.execute(text("LOCK TABLE gallery_changes IN EXCLUSIVE MODE"))
    row = GalleryChangeRow(op=op.value, worker_id=worker_id)
    session.add(row)
    session.flush()
    return row.version


def _stored_encoding(model_id: str, blob: bytes) -> FaceEncoding:
    """A stored vector on the wire; it was checked (128 finite float32) when stored, so only its size is."""
    if len(blob) != EMBEDDING_DIM * 4:
        raise ValueError(f"a stored encoding has {len(blob)} bytes, not {EMBEDDING_DIM * 4}")
    return FaceEncoding.model_construct(model=model_id, data=base64.b64encode(blob).decode("ascii"))


def _change_for(
    worker: Worker | None, worker_id: str, version: int, *, encodings: Sequence[FaceEncoding] | None = None
) -> GalleryChange:
    if worker is None:
        return GalleryChange(version=version, op=GalleryOp.DELETE, worker_id=worker_id)
    if encodings is None:
        encodings = [_stored_encoding(s.model_id, s.vector) for s in worker.samples]
    return GalleryChange(
        version=version,
        op=GalleryOp.UPSERT,
        worker_id=worker_id,
        display_name=worker.name,
        encodings=tuple(encodings),
        active=worker.active,
        valid_from=worker.valid_from,
        valid_until=worker.valid_until,
        stations=None if worker.stations is None else tuple(worker.stations),
    )
