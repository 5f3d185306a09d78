"""Workers (admins only): search the list, open a profile, see a worker's thumbnail.

The changes (suspend, validity, credentials, delete) are in worker_actions.py,
whose routes are included in this module's ``router``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import Response

from server.errors import NotFound
from server.tables import Role, WorkerPhoto
from server.web.auth import PageUser, require_role
from server.web.pages import worker_actions
from server.web.pages.worker_data import (
    CATEGORY_NAMES,
    CREDENTIAL_STATUS_NAMES,
    DECISION_NAMES,
    KIND_NAMES,
    STATUS_NAMES,
    VALIDITY_TIME_ZONE,
    WorkerSearch,
    first_day,
    last_day,
    load_profile,
    search_workers,
)
from server.web.templating import N_, render

router = APIRouter(include_in_schema=False)
Admin = Annotated[PageUser, Depends(require_role(Role.ADMIN))]

# What the profile says after a change (``?done=``) or a refused form (``?error=``).
DONE_MESSAGES = {
    "suspended": N_("The worker is suspended. The stations are being told; see their confirmations below."),
    "reinstated": N_("The worker is reinstated. The stations are being told; see their confirmations below."),
    "validity": N_("Validity and station access are saved. The stations are being told."),
    "revoked": N_("The QR credential is revoked. Stations refuse it once they confirm the change below."),
}
ERROR_MESSAGES = {
    "dates": N_("Enter the days as dates (year-month-day)."),
    "order": N_("The last day must not be before the first day."),
    "stations": N_("Choose at least one station, or allow every station."),
    "too_many_stations": N_("Too many stations chosen: allow every station instead."),
    "not_active": N_("Reinstate the worker before issuing a QR credential."),
    "days": N_("A QR credential is valid for 1 to %(max)s days."),
    "key": N_("The server's QR signing key cannot be used. Ask the operator to check the server's data folder."),
}


@router.get("/workers")
def workers_list(
    request: Request, user: Admin, q: str = "", status: str = "", category: str = "", after: str = ""
) -> Response:
    search = WorkerSearch(q=q, status=status, category=category)
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        page = search_workers(session=session, search=search, after=after or None)
    next_url = "/workers?" + urlencode({**search.query(), "after": page.next_cursor}) if page.next_cursor else ""
    first_url = "/workers?" + urlencode(search.query()) if after else ""
    return render(
        request, "workers.html", search=search, page=page, next_url=next_url, first_url=first_url,
        category_names=CATEGORY_NAMES, status_names=STATUS_NAMES,
    )


@router.get("/workers/{worker_id}")
def worker_profile(request: Request, user: Admin, worker_id: str, done: str = "", error: str = "") -> Response:
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        try:
            profile = load_profile(session=session, worker_id=worker_id)
        except NotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND) from None
    return render(
        request,
        "worker.html",
        p=profile,
        w=profile.worker,
        done_message=DONE_MESSAGES.get(done, ""),
        error_message=ERROR_MESSAGES.get(error, ""),
        max_days=worker_actions.MAX_VALID_DAYS,
        first_day=first_day(profile.worker.valid_from),
        last_day=last_day(profile.worker.valid_until),
        validity_zone=VALIDITY_TIME_ZONE,
        category_names=CATEGORY_NAMES,
        status_names=STATUS_NAMES,
        credential_status_names=CREDENTIAL_STATUS_NAMES,
        decision_names=DECISION_NAMES,
        kind_names=KIND_NAMES,
    )


@router.get("/workers/{worker_id}/photo")
def worker_photo(request: Request, user: Admin, worker_id: str) -> Response:
    """The stored thumbnail, never cached: it is personal data and must vanish with the worker."""
    with request.app.state.ctx.sessions() as session:
        photo = session.get(WorkerPhoto, worker_id)
        if photo is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        jpeg = photo.jpeg
    return Response(
        jpeg, media_type="image/jpeg",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"},
    )


router.include_router(worker_actions.router)
