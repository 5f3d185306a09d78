"""The entry-log audit page (/entries) and its CSV download (/entries.csv); admins and auditors only.

The filter form is a plain GET form, so a filtered view is a link that can be
bookmarked or sent on. Dates are whole days in the chosen station's time zone
(Asia/Shanghai when no station is chosen), "to" included. Times in the table
are shown in each row's station time zone; both the station's clock and the
server's receive time are shown, since a station's clock can be off.

Rows of refused attempts from stations that send snapshots have a "Snapshot"
link: the face picture is shown only when someone asks for it (entries.js
puts it in the row; without JavaScript the link opens it), and every view is
audited (``entries.snapshot_view``) and never cached.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from core.i18n import DEFAULT_TIME_ZONE, translator, zone
from models.messages import Decision, EventKind
from server import audit
from server.entries import InvalidCursor
from server.entrylog import EntryFilter, entry_log_page
from server.export import CSV_MEDIA_TYPE, EXPORT_COLUMNS, export_csv, export_filename
from server.snapshots import snapshot_of, with_snapshots
from server.tables import WORKER_CATEGORIES, Role, Station, utcnow
from server.web.auth import PageUser, require_role
from server.web.templating import N_, render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
Reader = Annotated[PageUser, Depends(require_role(Role.ADMIN, Role.AUDITOR))]
PAGE_SIZE = 50
TIME_FORMAT = "yyyy-MM-dd HH:mm:ss"

DECISIONS = {
    Decision.GRANTED.value: N_("Granted"),
    Decision.DENIED.value: N_("Denied"),
    Decision.SPOOF.value: N_("Spoof"),
}
KINDS = {
    EventKind.FACE.value: N_("Face"),
    EventKind.QR.value: N_("QR code"),
    EventKind.EXIT_REQUEST.value: N_("Exit button"),
    EventKind.FORCED_OPEN.value: N_("Door forced open"),
    EventKind.HELD_OPEN.value: N_("Door held open"),
    EventKind.TAMPER.value: N_("Tamper"),
}
CATEGORIES = {
    "courier": N_("Courier"),
    "food_delivery": N_("Food delivery"),
    "sanitation": N_("Sanitation"),
    "designated_driver": N_("Designated driver"),
    "other": N_("Other"),
}
assert set(CATEGORIES) == set(WORKER_CATEGORIES) and set(KINDS) == {k.value for k in EventKind}


@dataclass(frozen=True)
class FormValues:
    """The form as the user filled it in (echoed back into the form and the links)."""

    station_id: str = ""
    worker_id: str = ""
    category: str = ""
    decision: str = ""
    kind: str = ""
    date_from: str = ""
    date_to: str = ""

    def query(self, **extra: str) -> str:
        values = {"station_id": self.station_id, "worker_id": self.worker_id, "category": self.category,
                  "decision": self.decision, "kind": self.kind, "from": self.date_from, "to": self.date_to, **extra}
        return urlencode({k: v for k, v in values.items() if v})


def form_values(
    station_id: Annotated[str, Query(max_length=63)] = "",
    worker_id: Annotated[str, Query(max_length=64)] = "",
    category: Annotated[str, Query(max_length=24)] = "",
    decision: Annotated[str, Query(max_length=16)] = "",
    kind: Annotated[str, Query(max_length=16)] = "",
    date_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    date_to: Annotated[str, Query(alias="to", max_length=10)] = "",
) -> FormValues:
    return FormValues(*(v.strip() for v in (station_id, worker_id, category, decision, kind, date_from, date_to)))


Form = Annotated[FormValues, Depends(form_values)]


def to_filter(form: FormValues, station_zone: str) -> tuple[EntryFilter | None, list[str]]:
    """The EntryFilter of the form, or None and the (English) problems to show."""
    problems: list[str] = []
    tz = zone(station_zone)

    def day(text: str, what: str) -> datetime | None:
        if not text:
            return None
        try:
            return datetime.combine(date.fromisoformat(text), time(0), tz)
        except ValueError:
            problems.append(what)
            return None

    since = day(form.date_from, N_("The start date is not a date (use YYYY-MM-DD)."))
    until_day = day(form.date_to, N_("The end date is not a date (use YYYY-MM-DD)."))
    until = until_day + timedelta(days=1) if until_day is not None else None  # the end day is included
    if form.category and form.category not in CATEGORIES:
        problems.append(N_("Unknown category."))
    if form.decision and form.decision not in DECISIONS:
        problems.append(N_("Unknown decision."))
    if form.kind and form.kind not in KINDS:
        problems.append(N_("Unknown kind of event."))
    if since is not None and until is not None and since >= until:
        problems.append(N_("The start date is after the end date."))
    if problems:
        return None, problems
    return EntryFilter(
        station_id=form.station_id or None,
        worker_id=form.worker_id or None,
        category=form.category or None,
        decision=Decision(form.decision) if form.decision else None,
        kind=EventKind(form.kind) if form.kind else None,
        since=since,
        until=until,
    ), []


@router.get("/entries")
def entries_page(
    request: Request, user: Reader, form: Form, cursor: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    ctx = request.app.state.ctx
    tr = translator(user.language)
    with ctx.sessions() as session:
        listed = select(Station.station_id, Station.name, Station.time_zone).order_by(Station.name)
        stations = session.execute(listed).all()
        zones = {s.station_id: s.time_zone for s in stations}
        filters, problems = to_filter(form, zones.get(form.station_id, DEFAULT_TIME_ZONE))
        rows, next_cursor = [], None
        if filters is not None:
            try:
                page = entry_log_page(session=session, filters=filters, limit=PAGE_SIZE, cursor=cursor or None)
                rows, next_cursor = list(page.rows), page.next_cursor
            except InvalidCursor:
                problems.append(N_("That page link is no longer valid; showing the newest entries."))
                page = entry_log_page(session=session, filters=filters, limit=PAGE_SIZE)
                rows, next_cursor = list(page.rows), page.next_cursor
        snapshots = with_snapshots(session, [r.event_id for r in rows])
    return render(
        request,
        "entries.html",
        status_code=400 if filters is None else 200,
        form=form,
        stations=stations,
        rows=rows,
        snapshots=snapshots,
        problems=[tr.gettext(p) for p in problems],
        next_url=f"/entries?{form.query(cursor=next_cursor)}" if next_cursor else None,
        first_url=f"/entries?{form.query()}" if cursor else None,
        export_url=f"/entries.csv?{form.query()}",
        decisions=DECISIONS,
        kinds=KINDS,
        categories=CATEGORIES,
        time_format=TIME_FORMAT,
        default_zone=DEFAULT_TIME_ZONE,
    )


@router.get("/entries/{event_id}/snapshot")
def entry_snapshot(request: Request, user: Reader, event_id: uuid.UUID) -> Response:
    """The snapshot of a refused attempt; each view is audited, and the picture is never cached."""
    with request.app.state.ctx.sessions() as session:
        row = snapshot_of(session, str(event_id))
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        jpeg = row.jpeg
        audit.record(session, actor=user.actor, action="entries.snapshot_view", target=str(event_id),
                     detail={"station_id": row.station_id})
        session.commit()
    log.info("%s viewed the snapshot of entry %s", user.actor, event_id)
    return Response(
        jpeg, media_type="image/jpeg",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Disposition": "inline",
                 "Referrer-Policy": "same-origin"},
    )


@router.get("/entries.csv")
def entries_csv(request: Request, user: Reader, form: Form) -> Response:
    """Every entry matching the form as CSV (streamed); the export and its filters are audited."""
    ctx = request.app.state.ctx
    tr = translator(user.language)
    with ctx.sessions() as session:
        tz = session.scalar(select(Station.time_zone).where(Station.station_id == form.station_id))
        filters, problems = to_filter(form, tz or DEFAULT_TIME_ZONE)
        if filters is None:
            return Response("\n".join(tr.gettext(p) for p in problems), status_code=400, media_type="text/plain")
        audit.record(session, actor=user.actor, action="entries.export", target="web", detail=filters.as_dict())
        session.commit()
    log.info("%s exports entries %s", user.actor, filters.as_dict())
    headers = [tr.gettext(english) for _, english in EXPORT_COLUMNS]
    return StreamingResponse(
        export_csv(ctx.engine, filters, headers=headers),
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{export_filename(filters, utcnow())}"',
            "Cache-Control": "no-store",
        },
    )
