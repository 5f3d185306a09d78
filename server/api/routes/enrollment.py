"""Enrollment: sessions, one sample at a time, the consent-first enrollment, and consent withdrawal.

Used by the enrollment page (server/web/pages/enroll.py) and ``./run enroll``
(enroll/capture.py). Admins and enrollment staff may use every route except
creating a session (admins only); the bearer token acts as an admin.
Sentences in the answers (problems, refusals) are in the signed-in user's
language, else the request's Accept-Language (core.i18n.negotiate).

Status codes: a usable sample 200, an unusable one 422 (same body plus
``detail``), a file over the upload limit 413; an enrollment 201, refused
for consent or fields 422, for a duplicate face 409 with ``duplicate_of``
(nothing stored; send ``allow_duplicate`` to override), for a phone number
already enrolled 409. Every change is committed, then broadcast to the
stations (a station that misses it gets it at its next sync).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile, status
from fastapi.responses import JSONResponse

from core.i18n import Translator, negotiate, translator
from core.quality import Problem
from core.imaging import MAX_IMAGE_PIXELS
from enroll.messages import CONSENT_WITHDRAWN, problem_message
from models.encoding import FaceEncoding
from server import enrolling, gallery
from server.api.deps import EncoderDep, IngestDep, SessionDep, SettingsDep, broadcast
from server.api.schemas_enrollment import (
    ConsentWithdrawn, DuplicatePublic, EnrollmentCreate, EnrollmentCreated, ProblemPublic, SampleChecked,
    SessionCreate, SessionPublic, SessionsPublic,
)
from server.tables import Role
from server.web.auth import ApiPrincipal, api_roles

log = logging.getLogger(__name__)

router = APIRouter(tags=["enrollment"])

STAFF_OR_ADMIN = (Role.ADMIN, Role.STAFF)
Staff = Annotated[ApiPrincipal, Depends(api_roles(read=STAFF_OR_ADMIN, write=STAFF_OR_ADMIN))]
Admin = Annotated[ApiPrincipal, Depends(api_roles(read=STAFF_OR_ADMIN, write=(Role.ADMIN,)))]


def _t(request: Request, principal: ApiPrincipal) -> Translator:
    return translator(principal.language or negotiate(request.headers.get("accept-language")))


def _session_public(info: enrolling.SessionInfo) -> SessionPublic:
    return SessionPublic(
        session_id=info.session_id, place=info.place, starts_at=info.starts_at, ends_at=info.ends_at,
        note=info.note, created_by=info.created_by, staff=list(info.staff), enrolled=info.enrolled,
    )


def _refused(code: int, t: Translator, err: Exception, **extra: object) -> JSONResponse:
    message = err.message(t) if isinstance(err, enrolling.Said) else str(err)
    return JSONResponse(status_code=code, content={"detail": message, **extra})


@router.post("/enrollment/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionPublic)
def create_session(
    body: SessionCreate, request: Request, session: SessionDep, principal: Admin
) -> SessionPublic | JSONResponse:
    try:
        info = enrolling.create_session(
            session=session, place=body.place, starts_at=body.starts_at, ends_at=body.ends_at, staff=body.staff,
            note=body.note, actor=principal.actor,
        )
    except enrolling.EnrollmentError as err:
        return _refused(status.HTTP_422_UNPROCESSABLE_CONTENT, _t(request, principal), err)
    return _session_public(info)


@router.get("/enrollment/sessions", response_model=SessionsPublic)
def list_sessions(session: SessionDep, _principal: Staff) -> SessionsPublic:
    return SessionsPublic(items=[_session_public(i) for i in enrolling.list_sessions(session=session)])


@router.post("/enrollment/samples", response_model=SampleChecked)
def check_sample(
    request: Request,
    session: SessionDep,
    encoder: EncoderDep,
    settings: SettingsDep,
    principal: Staff,
    photo: Annotated[UploadFile, File(description="one photo or camera snapshot (JPEG, PNG, BMP, WebP)")],
) -> SampleChecked | JSONResponse:
    """Check one photo: quality, template, thumbnail, and whether the face is already enrolled. Stores nothing."""
    t = _t(request, principal)
    data = photo.file.read(settings.max_photo_bytes + 1)
    if len(data) > settings.max_photo_bytes:
        problem = Problem("image_too_large", {"megapixels": MAX_IMAGE_PIXELS // 1_000_000, "megabytes": settings.max_photo_bytes // 2**20})
        return _sample_reply(enrolling.SampleResult((problem,)), t, status.HTTP_413_CONTENT_TOO_LARGE)
    result = enrolling.check_sample(session=session, encoder=encoder, data=data)
    log.info("sample from %s: %s", principal.actor, "ok" if result.ok else [p.code for p in result.problems])
    return _sample_reply(result, t, status.HTTP_200_OK if result.ok else status.HTTP_422_UNPROCESSABLE_CONTENT)


def _sample_reply(result: enrolling.SampleResult, t: Translator, code: int) -> SampleChecked | JSONResponse:
    report = result.report
    body = SampleChecked(
        ok=result.ok,
        problems=[ProblemPublic(code=p.code, message=problem_message(p, t)) for p in result.problems],
        face_px=report.face_px if report is not None else 0,
        encoding=FaceEncoding.from_vector(result.vector, model=result.model_id) if result.ok else None,
        thumbnail_b64=base64.b64encode(result.thumbnail).decode("ascii") if result.ok and result.thumbnail else None,
        duplicate=DuplicatePublic(**vars(result.duplicate)) if result.duplicate is not None else None,
        measurements={} if report is None else {
            "sharpness": report.sharpness, "brightness": report.brightness, "yaw": report.yaw, "ear": report.ear,
        },
    )
    if code == status.HTTP_200_OK:
        return body
    detail = " ".join(p.message for p in body.problems)
    return JSONResponse(status_code=code, content={**body.model_dump(mode="json"), "detail": detail})


@router.post("/enrollment/workers", status_code=status.HTTP_201_CREATED, response_model=EnrollmentCreated)
def enroll_worker(
    body: EnrollmentCreate, request: Request, session: SessionDep, ingest: IngestDep, principal: Staff
) -> EnrollmentCreated | JSONResponse:
    """Save a worker with 1-5 sample encodings; refused without consent or when the face is already enrolled."""
    t = _t(request, principal)
    thumbnail = None
    if body.thumbnail_b64:
        try:
            thumbnail = base64.b64decode(body.thumbnail_b64, validate=True)
        except (binascii.Error, ValueError):
            return _refused(status.HTTP_422_UNPROCESSABLE_CONTENT, t, ValueError("thumbnail_b64 is not base64"))
    fields = enrolling.WorkerFields(
        name=body.name, phone=body.phone, category=body.category, employer=body.employer,
        valid_until=body.valid_until, session_id=body.session_id,
    )
    consent = None if body.consent is None else enrolling.ConsentGiven(body.consent.text_version,
                                                                       body.consent.allows_photo)
    try:
        worker, change = enrolling.enroll(
            session=session, fields=fields, consent=consent, vectors=[e.vector() for e in body.encodings],
            model_id=body.encodings[0].model, thumbnail=thumbnail, actor=principal.actor,
            allow_duplicate=body.allow_duplicate,
        )
    except enrolling.EnrollmentError as err:  # ConsentRequired included
        return _refused(status.HTTP_422_UNPROCESSABLE_CONTENT, t, err)
    except enrolling.DuplicateFace as err:
        dup = DuplicatePublic(**vars(err.duplicate)).model_dump()
        return _refused(status.HTTP_409_CONFLICT, t, err, duplicate_of=dup)
    except enrolling.PhoneTaken as err:
        return _refused(status.HTTP_409_CONFLICT, t, err)
    broadcast(ingest, change)
    photo_kept = bool(thumbnail) and consent is not None and consent.allows_photo
    return EnrollmentCreated(worker_id=worker.worker_id, name=worker.name, version=change.version,
                             samples=len(body.encodings), photo_kept=photo_kept)


@router.post("/workers/{worker_id}/consent/withdraw", response_model=ConsentWithdrawn)
def withdraw_consent(
    worker_id: str, request: Request, session: SessionDep, ingest: IngestDep, principal: Staff
) -> ConsentWithdrawn | JSONResponse:
    """Delete the worker's face data here and, through the broadcast change, at every station."""
    t = _t(request, principal)
    name = gallery.get_worker(session=session, worker_id=worker_id).name  # NotFound -> 404
    try:
        change = enrolling.withdraw_consent(session=session, worker_id=worker_id, actor=principal.actor)
    except enrolling.NothingToWithdraw as err:
        return _refused(status.HTTP_409_CONFLICT, t, err)
    broadcast(ingest, change)
    message = t.gettext(CONSENT_WITHDRAWN, name=name)
    return ConsentWithdrawn(worker_id=worker_id, version=change.version, message=message)
