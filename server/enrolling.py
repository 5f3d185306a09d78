"""Enrollment on the server: sessions, sample checks, the duplicate check, consent first, withdrawal.

Order of an enrollment (issue 6): staff record the worker's **consent**, take
3-5 **samples** (each checked by :func:`check_sample`, in
server/enrollment_samples.py: quality, template, thumbnail, and whether the
face is already enrolled), then :func:`enroll`
saves the worker. :func:`enroll` checks everything again before it writes:
consent given and its text known, fields valid, phone free, and **no enrolled
worker with the same face** (unless staff explicitly override the warning).
The consent row, the worker, its face samples, its thumbnail (only if the
consent allows a photo) and the audit row are committed in one transaction,
so face data can never exist without its consent record.

**Withdrawal** (:func:`withdraw_consent`) deletes the worker's face samples
and photo, marks the consent withdrawn and appends a gallery change for the
worker that carries no encodings: every station replaces the worker's
encodings with that empty set (edge/store.py), so the face is gone
everywhere, and the per-station confirmations (server/stations.py) show
which stations hold the change. The worker's record (name, phone, QR
access) stays; deleting the worker is the separate, complete deletion.

Errors carry an English message (``str(err)``) and a msgid
with values for the caller's language (``err.message(t)``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.i18n import Translator
from core.imaging import ImageError, encode_jpeg, fit_within, load_image
from enroll import messages as msg
from models.messages import GalleryChange
from server import audit, gallery
from server.enrollment_samples import (
    DUPLICATE_THRESHOLD, THUMBNAIL_PX, Duplicate, SampleResult, check_sample, find_duplicate,
)
from server.errors import Conflict, NotFound, ServerError
from server.snapshots import forget_worker
from server.tables import (
    WORKER_CATEGORIES, Consent, EnrollmentSession, Role, SessionStaff, User, Worker, WorkerPhoto, WorkerStatus,
    utcnow,
)

__all__ = [
    "DUPLICATE_THRESHOLD", "ConsentGiven", "ConsentRequired", "Duplicate", "DuplicateFace", "EnrollmentError",
    "NothingToWithdraw", "PhoneTaken", "SampleResult", "Said", "SessionInfo", "WorkerFields", "check_sample",
    "create_session", "enroll", "find_duplicate", "get_session", "list_sessions", "withdraw_consent",
]

log = logging.getLogger(__name__)

MAX_SAMPLES = 5


class Said:
    """An error whose sentence can be said in the staff member's language."""

    msgid: str
    values: dict[str, object]

    def message(self, t: Translator) -> str:
        return t.gettext(self.msgid, **self.values)


class EnrollmentError(Said, ServerError, ValueError):
    """A field of an enrollment or session is invalid (HTTP 422); nothing was stored."""

    def __init__(self, msgid: str, **values: object) -> None:
        super().__init__(msgid % values if values else msgid)
        self.msgid, self.values = msgid, values


class ConsentRequired(EnrollmentError):
    """No consent (or an unknown consent text): no face data may be stored."""

    def __init__(self, msgid: str = msg.CONSENT_REQUIRED, **values: object) -> None:
        super().__init__(msgid, **values)


class NothingToWithdraw(Said, Conflict):
    """The consent was withdrawn before and no face data is left (HTTP 409)."""

    def __init__(self) -> None:
        super().__init__("consent already withdrawn and no face data left")
        self.msgid, self.values = msg.NOTHING_TO_WITHDRAW, {}


class PhoneTaken(Said, Conflict):
    def __init__(self, phone: str) -> None:
        super().__init__(msg.PHONE_TAKEN % {"phone": phone})
        self.msgid, self.values = msg.PHONE_TAKEN, {"phone": phone}


class DuplicateFace(Said, Conflict):
    """The face is already enrolled (HTTP 409); nothing was stored."""

    def __init__(self, duplicate: Duplicate) -> None:
        self.msgid, self.values = msg.DUPLICATE, {"name": duplicate.name}
        super().__init__(f"already enrolled as {duplicate.name} ({duplicate.worker_id})")
        self.duplicate = duplicate


# -- sessions ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    place: str
    starts_at: datetime
    ends_at: datetime
    note: str
    created_by: str
    staff: tuple[str, ...]
    enrolled: int


def create_session(
    *, session: Session, place: str, starts_at: datetime, ends_at: datetime, staff: Sequence[str], actor: str,
    note: str = "",
) -> SessionInfo:
    """A new enrollment session; every name in ``staff`` must be an enabled staff member or admin."""
    if ends_at <= starts_at:
        raise EnrollmentError(msg.SESSION_TIMES)
    users = []
    for username in dict.fromkeys(staff):
        user = session.scalar(select(User).where(User.username == username))
        if user is None or user.disabled or user.role not in (Role.STAFF.value, Role.ADMIN.value):
            raise EnrollmentError(msg.UNKNOWN_STAFF, username=username)
        users.append(user)
    row = EnrollmentSession(place=place, starts_at=starts_at, ends_at=ends_at, note=note, created_by=actor)
    row.staff = [SessionStaff(user_id=u.user_id) for u in users]
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="enrollment.session_create", target=str(row.session_id),
                 detail={"place": place, "staff": [u.username for u in users]})
    session.commit()
    log.info("enrollment session %d at %r created by %s", row.session_id, place, actor)
    return get_session(session=session, session_id=row.session_id)


def get_session(*, session: Session, session_id: int) -> SessionInfo:
    row = session.get(EnrollmentSession, session_id)
    if row is None:
        raise NotFound(msg.UNKNOWN_SESSION % {"session_id": session_id})
    return _info(session, row)


def list_sessions(*, session: Session, limit: int = 200) -> list[SessionInfo]:
    """The newest sessions first (by start time)."""
    rows = session.scalars(
        select(EnrollmentSession).order_by(EnrollmentSession.starts_at.desc(), EnrollmentSession.session_id.desc())
        .limit(limit)
    )
    return [_info(session, row) for row in rows]


def _info(session: Session, row: EnrollmentSession) -> SessionInfo:
    staff = session.scalars(
        select(User.username).join(SessionStaff, SessionStaff.user_id == User.user_id)
        .where(SessionStaff.session_id == row.session_id).order_by(User.username)
    )
    enrolled = session.scalar(
        select(func.count()).select_from(Worker).where(Worker.enrollment_session_id == row.session_id)
    )
    return SessionInfo(row.session_id, row.place, row.starts_at, row.ends_at, row.note, row.created_by,
                       tuple(staff), int(enrolled or 0))


def clean_thumbnail(data: bytes) -> bytes:
    """A client's thumbnail decoded and re-encoded small (no metadata, no surprises), or EnrollmentError."""
    try:
        return encode_jpeg(fit_within(load_image(data), THUMBNAIL_PX)[0], quality=80)
    except ImageError as err:
        raise EnrollmentError(msg.PROBLEMS["unreadable_image"]) from err


# -- enrollment and withdrawal ----------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerFields:
    name: str
    phone: str | None = None
    category: str | None = None
    employer: str | None = None
    valid_until: datetime | None = None
    session_id: int | None = None


@dataclass(frozen=True)
class ConsentGiven:
    """The worker agreed to consent text ``text_version``; ``allows_photo``: a thumbnail may be kept."""

    text_version: str
    allows_photo: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def enroll(
    *, session: Session, fields: WorkerFields, consent: ConsentGiven | None, vectors: Sequence[np.ndarray],
    model_id: str, thumbnail: bytes | None, actor: str, allow_duplicate: bool = False,
    threshold: float = DUPLICATE_THRESHOLD,
) -> tuple[Worker, GalleryChange]:
    """Save a worker: consent, worker, samples, photo (if allowed) and audit row in one transaction.

    Raises ConsentRequired, EnrollmentError (fields), PhoneTaken or DuplicateFace before
    anything is written.
    """
    if consent is None:
        raise ConsentRequired()
    if consent.text_version not in msg.CONSENT_TEXTS:
        raise ConsentRequired(msg.UNKNOWN_CONSENT_TEXT, version=consent.text_version)
    if not 1 <= len(vectors) <= MAX_SAMPLES:
        raise EnrollmentError(f"send 1 to {MAX_SAMPLES} face samples, not {len(vectors)}")
    if fields.category is not None and fields.category not in WORKER_CATEGORIES:
        raise EnrollmentError(msg.UNKNOWN_CATEGORY, category=fields.category)
    if fields.valid_until is not None and fields.valid_until <= datetime.now(timezone.utc):
        raise EnrollmentError(msg.VALID_UNTIL_PAST)
    if fields.session_id is not None and session.get(EnrollmentSession, fields.session_id) is None:
        raise EnrollmentError(msg.UNKNOWN_SESSION, session_id=fields.session_id)
    if fields.phone and session.scalar(select(Worker.worker_id).where(Worker.phone == fields.phone)) is not None:
        raise PhoneTaken(fields.phone)
    duplicate = find_duplicate(session=session, vectors=vectors, threshold=threshold)
    if duplicate is not None and not allow_duplicate:
        raise DuplicateFace(duplicate)
    photo = clean_thumbnail(thumbnail) if thumbnail and consent.allows_photo else None

    worker_id = uuid.uuid4().hex
    rows: list[object] = [Consent(
        worker_id=worker_id, text_version=consent.text_version, allows_photo=consent.allows_photo,
        given_at=utcnow(), recorded_by=actor, enrollment_session_id=fields.session_id,
    )]
    if photo is not None:
        rows.append(WorkerPhoto(worker_id=worker_id, jpeg=photo))
    detail: dict[str, object] = {"name": fields.name, "samples": len(vectors), "session_id": fields.session_id,
                                 "consent": consent.text_version, "photo_kept": photo is not None}
    if duplicate is not None:
        detail["duplicate_overridden"] = {"worker_id": duplicate.worker_id, "distance": duplicate.distance}
    audit.record(session, actor=actor, action="worker.enroll", target=worker_id, detail=detail)
    worker, change = gallery.enroll_worker(
        session=session, name=fields.name, vectors=vectors, model_id=model_id, phone=fields.phone or None,
        worker_id=worker_id, category=fields.category, employer=fields.employer, valid_until=fields.valid_until,
        enrollment_session_id=fields.session_id, enrolled_by=actor, related_rows=rows,
    )
    log.info("worker %s enrolled by %s (%d samples, gallery version %d)", worker_id, actor, len(vectors),
             change.version)
    return worker, change


def withdraw_consent(*, session: Session, worker_id: str, actor: str) -> GalleryChange:
    """Delete the worker's face samples and photo, mark the consent withdrawn, and return the gallery
    change (no encodings) that removes the face from every station; broadcast it after this returns."""
    worker = gallery.get_worker(session=session, worker_id=worker_id)
    open_consents = list(session.scalars(
        select(Consent).where(Consent.worker_id == worker_id, Consent.withdrawn_at.is_(None))
    ))
    photo = session.get(WorkerPhoto, worker_id)
    samples = len(worker.samples)
    if not open_consents and not samples and photo is None:
        raise NothingToWithdraw()
    now = utcnow()
    for consent in open_consents:
        consent.withdrawn_at, consent.withdrawn_by = now, actor
    worker.samples.clear()  # delete-orphan: the rows go at the flush
    if photo is not None:
        session.delete(photo)
    snapshots = forget_worker(session, worker_id)  # refused attempts' pictures that may show this face
    audit.record(session, actor=actor, action="worker.consent_withdraw", target=worker_id,
                 detail={"samples_deleted": samples, "photo_deleted": photo is not None,
                         "snapshots_deleted": snapshots})
    # set_status re-broadcasts the worker's current state, which now carries no encodings.
    _worker, change = gallery.set_status(session=session, worker_id=worker_id, status=WorkerStatus(worker.status))
    log.info("consent of worker %s withdrawn by %s: %d samples deleted, gallery version %d",
             worker_id, actor, samples, change.version)
    return change



