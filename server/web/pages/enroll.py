"""The enrollment page (admins and enrollment staff) and the enrollment sessions page.

``GET /enroll`` is one page that walks staff through an enrollment: the
session and the worker's details, the consent (the capture stays disabled
until it is ticked), then 3-5 photos from the browser's camera
(getUserMedia, a canvas snapshot) or from files, each checked at once by
``POST /api/enrollment/samples`` and its verdict shown in plain words, a
duplicate warning that needs an explicit override, and the save through
``POST /api/enrollment/workers``. The work happens in static/enroll.js; the
page hands it its sentences, already translated, as JSON data (the pages'
CSP allows no inline script).

``GET /enroll/sessions`` lists the sessions; admins create one with the form
on it (``POST /enroll/sessions``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from core.i18n import DEFAULT_TIME_ZONE, Translator, translator, zone
from enroll import messages as msg
from server import enrolling
from server.enrollment_samples import DUPLICATE_THRESHOLD
from server.tables import Role, User
from server.web.auth import PageUser, require_role
from server.web.templating import N_, language_of, render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
Staff = Annotated[PageUser, Depends(require_role(Role.ADMIN, Role.STAFF))]
Admin = Annotated[PageUser, Depends(require_role(Role.ADMIN))]

MIN_SAMPLES, MAX_SAMPLES = 3, 5
TIME_ZONE = DEFAULT_TIME_ZONE

# Sentences the page's script shows (translated here, handed over as JSON).
SCRIPT_TEXTS: dict[str, str] = {
    "checking": N_("Checking the photo…"),
    "accepted": N_("Good photo: face %(px)s pixels."),
    "refused": N_("Not usable:"),
    "remove": N_("Remove"),
    "count": N_("%(n)s of %(min)s-%(max)s photos taken."),
    "need_more": N_("Take at least %(min)s good photos."),
    "too_many": N_("At most %(max)s photos: remove one first."),
    "duplicate": N_("Warning: this face is already enrolled as %(name)s. Enroll only if you are sure this is a "
                    "different person."),
    "camera_denied": N_("The camera cannot be used: allow this page to use the camera, or choose photo files "
                        "instead."),
    "camera_none": N_("This browser offers no camera here (a camera needs https or this computer itself): choose "
                      "photo files instead."),
    "saving": N_("Saving…"),
    "saved": N_("%(name)s is enrolled with %(n)s photos. The stations receive the face within seconds."),
    "failed": N_("The server could not be reached: check the network and try again."),
    "need_name": N_("Enter the worker's name."),
    "need_consent": N_("The worker's consent must be ticked first."),
    "need_override": N_("Tick the box to confirm that this is a different person, or remove the photos."),
}

SESSION_ERRORS = {
    "place": N_("Enter the place of the session."),
    "times": N_("Enter a start and an end time; the end must be after the start."),
}


def _texts(t: Translator) -> dict[str, str]:
    return {key: t.gettext(text) for key, text in SCRIPT_TEXTS.items()}


@router.get("/enroll")
def enroll_page(request: Request, user: Staff) -> Response:
    t = translator(language_of(request))
    with request.app.state.ctx.sessions() as session:
        sessions = enrolling.list_sessions(session=session)
    version = msg.CONSENT_TEXT_VERSION
    data: dict[str, Any] = {
        "texts": _texts(t), "min": MIN_SAMPLES, "max": MAX_SAMPLES, "consent_version": version,
    }
    return render(
        request, "enroll.html", sessions=sessions, categories=list(msg.CATEGORIES.items()),
        consent_text=t.gettext(msg.CONSENT_TEXTS[version]), consent_photo=t.gettext(msg.CONSENT_PHOTO),
        consent_version=version, data=data, min_samples=MIN_SAMPLES, max_samples=MAX_SAMPLES,
        threshold=DUPLICATE_THRESHOLD,
    )


@router.get("/enroll/sessions")
def sessions_page(request: Request, user: Staff, done: str = "") -> Response:
    t = translator(language_of(request))
    message = t.gettext(N_("Session %(id)s is created."), id=done) if done.isdigit() else ""
    return _sessions_view(request, user, message=message)


def _sessions_view(request: Request, user: PageUser, *, message: str = "", error: str = "", code: int = 200,
                   form: dict[str, Any] | None = None) -> Response:
    with request.app.state.ctx.sessions() as session:
        sessions = enrolling.list_sessions(session=session)
        staff = list(session.scalars(
            select(User.username).where(User.role.in_([Role.STAFF.value, Role.ADMIN.value]),
                                        User.disabled.is_(False)).order_by(User.username)
        ))
    return render(request, "enroll_sessions.html", status_code=code, sessions=sessions, staff=staff,
                  message=message, error=error, can_create=user.role == Role.ADMIN.value, time_zone=TIME_ZONE,
                  form=form or {"place": "", "starts_at": "", "ends_at": "", "note": "", "staff": []})


@router.post("/enroll/sessions")
def create_session(
    request: Request,
    user: Admin,
    place: Annotated[str, Form(max_length=200)] = "",
    starts_at: Annotated[str, Form(max_length=40)] = "",
    ends_at: Annotated[str, Form(max_length=40)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
    staff: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Times come from datetime-local inputs: wall-clock time in TIME_ZONE (the stations' default zone)."""
    t = translator(language_of(request))
    form = {"place": place, "starts_at": starts_at, "ends_at": ends_at, "note": note, "staff": staff or []}
    refuse = lambda text: _sessions_view(  # noqa: E731
        request, user, error=text, code=status.HTTP_422_UNPROCESSABLE_CONTENT, form=form)
    if not place.strip():
        return refuse(t.gettext(SESSION_ERRORS["place"]))
    try:
        start = datetime.fromisoformat(starts_at).replace(tzinfo=zone(TIME_ZONE))
        end = datetime.fromisoformat(ends_at).replace(tzinfo=zone(TIME_ZONE))
    except ValueError:
        return refuse(t.gettext(SESSION_ERRORS["times"]))
    with request.app.state.ctx.sessions() as session:
        try:
            info = enrolling.create_session(session=session, place=place.strip(), starts_at=start, ends_at=end,
                                            staff=staff or [], note=note.strip(), actor=user.actor)
        except enrolling.EnrollmentError as err:
            return refuse(err.message(t))
    return RedirectResponse(f"/enroll/sessions?done={info.session_id}", status_code=status.HTTP_303_SEE_OTHER)
