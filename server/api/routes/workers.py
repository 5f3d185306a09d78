"""Workers: enroll (photos or ready encodings), list, suspend, reinstate, delete.

Every change is committed first and then broadcast to the stations as a
GalleryChangeMessage; a station that misses the broadcast gets the change with
its next sync, because the change log is the source of truth.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from server import gallery
from server.api.deps import EncoderDep, IngestDep, SessionDep, SettingsDep, broadcast
from server.api.schemas import (
    MAX_PHOTOS,
    EnrollResult,
    WorkerChanged,
    WorkerCreate,
    WorkerEncodingsCreate,
    WorkerPublic,
    WorkersPublic,
)
from server.enrollment import PhotoRejected
from server.ingest import Ingest
from server.tables import Worker, WorkerStatus

router = APIRouter(prefix="/workers", tags=["workers"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EnrollResult)
def enroll_from_photos(
    session: SessionDep,
    encoder: EncoderDep,
    ingest: IngestDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=200)],
    photos: Annotated[list[UploadFile], File(description=f"1 to {MAX_PHOTOS} photos, each of exactly one face")],
    phone: Annotated[str | None, Form(max_length=200)] = None,
) -> EnrollResult:
    """Enroll a worker from photos; nothing is stored unless every photo gives exactly one face."""
    try:
        fields = WorkerCreate(name=name, phone=phone or None)
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False)) from None
    if not 1 <= len(photos) <= MAX_PHOTOS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"send 1 to {MAX_PHOTOS} photos, not {len(photos)}")
    vectors: list[np.ndarray] = []
    for number, photo in enumerate(photos, start=1):
        filename = photo.filename or f"photo {number}"
        data = photo.file.read(settings.max_photo_bytes + 1)
        if len(data) > settings.max_photo_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"photo {filename!r} is larger than {settings.max_photo_bytes} bytes",
            )
        try:
            vectors.append(encoder.encode(data, filename))
        except PhotoRejected as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    worker, change = gallery.enroll_worker(
        session=session, name=fields.name, phone=fields.phone, vectors=vectors, model_id=encoder.model_id
    )
    broadcast(ingest, change)
    return EnrollResult(worker_id=worker.worker_id, name=worker.name, version=change.version, samples=len(vectors))


@router.post("/encodings", status_code=status.HTTP_201_CREATED, response_model=EnrollResult)
def enroll_from_encodings(body: WorkerEncodingsCreate, session: SessionDep, ingest: IngestDep) -> EnrollResult:
    """Enroll a worker from encodings computed elsewhere (they must come from the stations' model)."""
    vectors = [enc.vector() for enc in body.encodings]
    worker, change = gallery.enroll_worker(
        session=session, name=body.name, phone=body.phone, vectors=vectors, model_id=body.encodings[0].model
    )
    broadcast(ingest, change)
    return EnrollResult(worker_id=worker.worker_id, name=worker.name, version=change.version, samples=len(vectors))


@router.get("", response_model=WorkersPublic)
def list_workers(session: SessionDep) -> WorkersPublic:
    return WorkersPublic(items=[_public(w, n) for w, n in gallery.list_workers(session=session)])


@router.delete("/{worker_id}", response_model=WorkerChanged)
def delete_worker(worker_id: str, session: SessionDep, ingest: IngestDep) -> WorkerChanged:
    """Delete the worker's personal and face data here, and from every station through the gallery change."""
    change = gallery.delete_worker(session=session, worker_id=worker_id)
    broadcast(ingest, change)
    return WorkerChanged(worker_id=worker_id, status="deleted", version=change.version)


@router.post("/{worker_id}/suspend", response_model=WorkerChanged)
def suspend_worker(worker_id: str, session: SessionDep, ingest: IngestDep) -> WorkerChanged:
    return _set_status(worker_id, WorkerStatus.SUSPENDED, session=session, ingest=ingest)


@router.post("/{worker_id}/reinstate", response_model=WorkerChanged)
def reinstate_worker(worker_id: str, session: SessionDep, ingest: IngestDep) -> WorkerChanged:
    return _set_status(worker_id, WorkerStatus.ACTIVE, session=session, ingest=ingest)


def _set_status(worker_id: str, new: WorkerStatus, *, session: SessionDep, ingest: Ingest | None) -> WorkerChanged:
    worker, change = gallery.set_status(session=session, worker_id=worker_id, status=new)
    broadcast(ingest, change)
    return WorkerChanged(worker_id=worker.worker_id, status=new.value, version=change.version)


def _public(worker: Worker, samples: int) -> WorkerPublic:
    return WorkerPublic(
        worker_id=worker.worker_id,
        name=worker.name,
        phone=worker.phone,
        status=worker.status,  # type: ignore[arg-type]  (checked by the table's constraint)
        samples=samples,
        created_at=worker.created_at,
        updated_at=worker.updated_at,
    )
