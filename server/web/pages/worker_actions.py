"""What admins change about a worker: suspend, reinstate, validity and station access, QR credentials, delete.

Every change goes through the domain functions (server/gallery.py,
server/credentials.py), which commit; the audit row is added to the same
session *before* the call, so the change and its audit row are committed
together or not at all. A gallery change is then broadcast to the stations the
way the API does (a station that misses it gets it with its next sync).
"""

from __future__ import annotations

import base64
import logging
from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import event
from sqlalchemy.orm import Session

from models.messages import MAX_STATIONS_PER_WORKER
from server import audit, gallery, stations
from server import credentials as creds
from server.api.deps import broadcast
from server.errors import NotFound
from server.tables import Credential, Role, WorkerStatus
from server.web.auth import PageUser, require_role
from server.web.pages.worker_data import day_start
from server.web.templating import render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
Admin = Annotated[PageUser, Depends(require_role(Role.ADMIN))]
MAX_VALID_DAYS = creds.MAX_VALID_DAYS
REFRESH_S = 2


def _profile(worker_id: str, **query: str) -> RedirectResponse:
    extra = "".join(f"{'&' if i else '?'}{k}={quote(v)}" for i, (k, v) in enumerate(query.items()))
    return RedirectResponse(f"/workers/{quote(worker_id, safe='')}{extra}", status_code=status.HTTP_303_SEE_OTHER)


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND)


# -- status --------------------------------------------------------------------------------


def _set_status(request: Request, user: PageUser, worker_id: str, new: WorkerStatus, action: str) -> Response:
    with request.app.state.ctx.sessions() as session:
        audit.record(session, actor=user.actor, action=action, target=worker_id)
        try:
            _worker, change = gallery.set_status(session=session, worker_id=worker_id, status=new)
        except NotFound:
            raise _not_found() from None
    broadcast(request.app.state.ctx.ingest, change)
    return _profile(worker_id, done="suspended" if new is WorkerStatus.SUSPENDED else "reinstated")


@router.post("/workers/{worker_id}/suspend")
def suspend(request: Request, user: Admin, worker_id: str) -> Response:
    return _set_status(request, user, worker_id, WorkerStatus.SUSPENDED, "worker.suspend")


@router.post("/workers/{worker_id}/reinstate")
def reinstate(request: Request, user: Admin, worker_id: str) -> Response:
    return _set_status(request, user, worker_id, WorkerStatus.ACTIVE, "worker.reinstate")


# -- validity and station access -----------------------------------------------------------


def _day(text: str) -> date | None:
    return date.fromisoformat(text.strip()) if text.strip() else None


@router.post("/workers/{worker_id}/validity")
def validity(
    request: Request,
    user: Admin,
    worker_id: str,
    valid_from: Annotated[str, Form(max_length=20)] = "",
    valid_until: Annotated[str, Form(max_length=20)] = "",
    access: Annotated[str, Form(max_length=10)] = "all",
    stations_: Annotated[list[str], Form(alias="stations")] = [],  # noqa: B006 - FastAPI copies defaults
) -> Response:
    """Dates are whole days: from the start of the first day until the end of the last (validity time zone)."""
    try:
        first, last = _day(valid_from), _day(valid_until)
    except ValueError:
        return _profile(worker_id, error="dates")
    if first is not None and last is not None and last < first:
        return _profile(worker_id, error="order")
    listed: list[str] | None = None
    if access == "listed":
        listed = sorted(set(stations_))
        if not listed:
            return _profile(worker_id, error="stations")
        if len(listed) > MAX_STATIONS_PER_WORKER:
            return _profile(worker_id, error="too_many_stations")
    starts = day_start(first) if first else None
    ends = day_start(last + timedelta(days=1)) if last else None
    with request.app.state.ctx.sessions() as session:
        known = {s.station_id for s in stations.list_stations(session=session)}
        if listed is not None and not set(listed) <= known:
            return _profile(worker_id, error="stations")
        detail = {
            "valid_from": starts.isoformat() if starts else None,
            "valid_until": ends.isoformat() if ends else None,
            "stations": listed,
        }
        audit.record(session, actor=user.actor, action="worker.validity", target=worker_id, detail=detail)
        try:
            _worker, change = gallery.set_access(
                session=session, worker_id=worker_id, valid_from=starts, valid_until=ends, stations=listed
            )
        except NotFound:
            raise _not_found() from None
    broadcast(request.app.state.ctx.ingest, change)
    return _profile(worker_id, done="validity")


# -- QR credentials ------------------------------------------------------------------------


def _audit_new_credential(session: Session, actor: str, worker_id: str, detail: dict[str, Any]) -> Any:
    """Add the audit row of the credential that ``session`` is about to commit, inside that commit.

    issue_credential creates the credential id and commits at once, so the row is
    written from a before_commit hook (objects added there are flushed by that commit).
    Returns the function that removes the hook.
    """

    def before_commit(sess: Session) -> None:
        for obj in list(sess.new):
            if isinstance(obj, Credential) and obj.worker_id == worker_id:
                audit.record(
                    sess, actor=actor, action="credential.issue", target=worker_id,
                    detail={**detail, "credential_id": obj.credential_id},
                )

    event.listen(session, "before_commit", before_commit)
    return lambda: event.remove(session, "before_commit", before_commit)


@router.post("/workers/{worker_id}/credentials")
def issue_credential(
    request: Request,
    user: Admin,
    worker_id: str,
    valid_days: Annotated[str, Form(max_length=10)] = "365",
    label: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Issue a QR credential and show its code once (the token is never stored, only re-signable)."""
    try:
        days = int(valid_days)
    except ValueError:
        return _profile(worker_id, error="days")
    if not 1 <= days <= MAX_VALID_DAYS:
        return _profile(worker_id, error="days")
    ctx = request.app.state.ctx
    try:
        signer = creds.signer_for(ctx.settings.data_dir)
    except creds.CredentialKeyError as err:
        log.error("cannot issue a QR credential: %s", err)
        return _profile(worker_id, error="key")
    with ctx.sessions() as session:
        try:
            worker = gallery.get_worker(session=session, worker_id=worker_id)
        except NotFound:
            raise _not_found() from None
        if worker.status != WorkerStatus.ACTIVE.value:
            return _profile(worker_id, error="not_active")
        detail = {"valid_days": days, "label": label.strip()}
        remove_hook = _audit_new_credential(session, user.actor, worker_id, detail)
        try:
            row, token = creds.issue_credential(
                session=session, signer=signer, worker_id=worker_id, valid_days=days, label=label.strip()
            )
        finally:
            remove_hook()
        name = worker.name
    png = base64.b64encode(creds.qr_png(token)).decode("ascii")
    return render(request, "worker_credential.html", worker_id=worker_id, name=name, row=row, qr_png_base64=png)


@router.post("/workers/{worker_id}/credentials/{credential_id}/revoke")
def revoke_credential(request: Request, user: Admin, worker_id: str, credential_id: str) -> Response:
    with request.app.state.ctx.sessions() as session:
        audit.record(
            session, actor=user.actor, action="credential.revoke", target=worker_id,
            detail={"credential_id": credential_id[:12]},
        )
        try:
            revocation = creds.revoke_credential(session=session, worker_id=worker_id, credential_id=credential_id)
        except NotFound:
            raise _not_found() from None
    broadcast(request.app.state.ctx.ingest, revocation.change)
    return _profile(worker_id, done="revoked")


# -- delete --------------------------------------------------------------------------------


def _delete_page(request: Request, worker_id: str, *, error: str = "", code: int = 200) -> Response:
    with request.app.state.ctx.sessions() as session:
        try:
            worker = gallery.get_worker(session=session, worker_id=worker_id)
        except NotFound:
            raise _not_found() from None
        return render(request, "worker_delete.html", status_code=code, w=worker, error=error)


@router.get("/workers/{worker_id}/delete")
def delete_form(request: Request, user: Admin, worker_id: str) -> Response:
    return _delete_page(request, worker_id)


@router.post("/workers/{worker_id}/delete")
def delete(
    request: Request, user: Admin, worker_id: str, confirm_name: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Delete only when the admin typed the worker's name: the face data cannot be brought back."""
    with request.app.state.ctx.sessions() as session:
        try:
            worker = gallery.get_worker(session=session, worker_id=worker_id)
        except NotFound:
            raise _not_found() from None
        if confirm_name.strip().casefold() != worker.name.strip().casefold():
            return _delete_page(request, worker_id, error="name", code=status.HTTP_422_UNPROCESSABLE_CONTENT)
        # No name or phone in the audit row: after this, nothing personal about the worker is left here.
        audit.record(
            session, actor=user.actor, action="worker.delete", target=worker_id,
            detail={"face_samples": len(worker.samples)},
        )
        change = gallery.delete_worker(session=session, worker_id=worker_id)
    broadcast(request.app.state.ctx.ingest, change)
    return RedirectResponse(f"/workers/{quote(worker_id, safe='')}/deleted", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/workers/{worker_id}/deleted")
def deleted(request: Request, user: Admin, worker_id: str) -> Response:
    """Which stations have deleted the worker's face data; reloads itself until every station confirmed."""
    with request.app.state.ctx.sessions() as session:
        try:
            confirmations = stations.worker_confirmations(session=session, worker_id=worker_id)
        except NotFound:
            raise _not_found() from None
    if confirmations.op != "delete":
        return _profile(worker_id)
    done = confirmations.confirmed == confirmations.total
    return render(
        request, "worker_deleted.html", worker_id=worker_id, c=confirmations, refresh_s=0 if done else REFRESH_S
    )
