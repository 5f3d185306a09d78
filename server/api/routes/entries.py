"""GET /api/entries: the entry log, newest first, keyset-paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from models.messages import Decision
from server.api.deps import SessionDep
from server.api.schemas import EntriesPage, EntryPublic
from server.entries import MAX_PAGE, list_entries

router = APIRouter(prefix="/entries", tags=["entries"])


@router.get("", response_model=EntriesPage)
def read_entries(
    session: SessionDep,
    station_id: Annotated[str | None, Query(max_length=63)] = None,
    worker_id: Annotated[str | None, Query(max_length=64)] = None,
    decision: Decision | None = None,
    since: Annotated[AwareDatetime | None, Query(description="occurred at or after (with offset, e.g. Z)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="occurred before (with offset)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> EntriesPage:
    page = list_entries(
        session=session,
        limit=limit,
        cursor=cursor,
        station_id=station_id,
        worker_id=worker_id,
        decision=decision,
        since=since,
        until=until,
    )
    items = [
        EntryPublic.model_validate({**_columns(entry), "worker_name": worker_name}) for entry, worker_name in page.rows
    ]
    return EntriesPage(items=items, next_cursor=page.next_cursor)


def _columns(entry: object) -> dict[str, object]:
    return {name: getattr(entry, name) for name in EntryPublic.model_fields if name != "worker_name"}
