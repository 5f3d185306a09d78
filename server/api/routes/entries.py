"""GET /api/entries: the entry log, newest first, filtered and keyset-paged; GET /api/entries.csv: all of it as CSV.

Both take the same filters (server/entrylog.py). The CSV streams with bounded
memory (server/export.py) and every export is written to the audit trail with
its filters.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from core.i18n import translator
from models.messages import Decision, EventKind
from server import audit
from server.api.deps import ContextDep, SessionDep
from server.api.schemas import EntryPublic
from server.entrylog import MAX_PAGE, EntryFilter, entry_log_page
from server.export import CSV_MEDIA_TYPE, EXPORT_COLUMNS, export_csv, export_filename
from server.tables import WORKER_CATEGORIES, utcnow

router = APIRouter(prefix="/entries", tags=["entries"])

Category = Literal[WORKER_CATEGORIES]  # type: ignore[valid-type]


class EntryLogItem(EntryPublic):
    station_name: str | None = Field(description="null when the station was removed")
    station_time_zone: str | None = Field(description="IANA zone to show this row's times in")
    worker_category: str | None = Field(description="the worker's category; null when unknown or deleted")


class EntryLogPublicPage(BaseModel):
    items: list[EntryLogItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")


def entry_filters(
    station_id: Annotated[str | None, Query(max_length=63)] = None,
    worker_id: Annotated[str | None, Query(max_length=64)] = None,
    category: Category | None = None,
    decision: Decision | None = None,
    kind: EventKind | None = None,
    since: Annotated[AwareDatetime | None, Query(description="occurred at or after (with offset, e.g. Z)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="occurred before (with offset)")] = None,
) -> EntryFilter:
    return EntryFilter(
        station_id=station_id or None,
        worker_id=worker_id or None,
        category=category,
        decision=decision,
        kind=kind,
        since=since,
        until=until,
    )


FilterDep = Annotated[EntryFilter, Depends(entry_filters)]


@router.get("", response_model=EntryLogPublicPage)
def read_entries(
    session: SessionDep,
    filters: FilterDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> EntryLogPublicPage:
    page = entry_log_page(session=session, filters=filters, limit=limit, cursor=cursor)
    items = [EntryLogItem.model_validate(row, from_attributes=True) for row in page.rows]
    return EntryLogPublicPage(items=items, next_cursor=page.next_cursor)


@router.get(".csv", response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def export_entries(request: Request, ctx: ContextDep, session: SessionDep, filters: FilterDep) -> StreamingResponse:
    """Every matching entry as CSV (UTF-8 with BOM), newest first, streamed."""
    principal = getattr(request.state, "principal", None)
    actor = getattr(principal, "actor", audit.API_TOKEN)
    language = getattr(principal, "language", None)
    # A signed-in user gets headers in their language; scripts get the English ones.
    tr = translator(language) if language else None
    headers = [tr.gettext(english) if tr else english for _, english in EXPORT_COLUMNS]
    audit.record(session, actor=actor, action="entries.export", target="api", detail=filters.as_dict())
    session.commit()
    name = export_filename(filters, utcnow())
    return StreamingResponse(
        export_csv(ctx.engine, filters, headers=headers),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
