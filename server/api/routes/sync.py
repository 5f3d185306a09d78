"""Sync state: which stations confirmed a change, heartbeats, and when and where a worker may enter.

    GET /api/changes/{version}            one gallery change, confirmed by which stations
    GET /api/workers/{worker_id}/sync     the same for the worker's newest change (also after deletion)
    PUT /api/workers/{worker_id}/access   validity window and station access list (a new gallery change)
    GET /api/stations/{station_id}/status the station's latest heartbeat
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models.messages import MAX_STATIONS_PER_WORKER, StationId
from server import gallery, stations
from server.api.deps import IngestDep, SessionDep
from server.stations import ChangeConfirmations

log = logging.getLogger(__name__)

router = APIRouter(tags=["sync"])

WorkerIdPath = Annotated[str, Path(max_length=64)]


class StationConfirmationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    station_id: str
    name: str
    confirmed: bool = Field(description="the station holds this change (its acknowledged version is at least it)")
    acked_version: int
    acked_at: datetime | None = Field(description="server time the station's current version was acknowledged")
    online: bool


class ChangeConfirmationsPublic(BaseModel):
    version: int
    op: str = Field(description="upsert or delete")
    worker_id: str
    created_at: datetime
    confirmed: int = Field(description="stations holding the change")
    total: int = Field(description="registered stations")
    summary: str = Field(description='e.g. "delete confirmed by 3 of 4 stations"')
    stations: list[StationConfirmationPublic]


class AccessUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    valid_from: AwareDatetime | None = Field(
        default=None, description="not granted before (with offset); null: no start"
    )
    valid_until: AwareDatetime | None = Field(default=None, description="not granted from then on; null: no end")
    stations: list[StationId] | None = Field(
        default=None,
        max_length=MAX_STATIONS_PER_WORKER,
        description="the only stations that may grant the worker; null: every station",
    )


class AccessChanged(BaseModel):
    worker_id: str
    valid_from: datetime | None
    valid_until: datetime | None
    stations: list[str] | None
    version: int = Field(description="gallery version of this change")


class StationStatusPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    station_id: str
    name: str
    online: bool
    last_seen_at: datetime | None
    heartbeat_at: datetime | None = Field(description="station clock of the latest heartbeat")
    agent_version: str
    gallery_version_acked: int
    gallery_acked_at: datetime | None
    outbox_depth: int
    outbox_bytes: int | None
    outbox_limit_bytes: int | None
    outbox_alarm: bool | None = Field(description="the station's outbox is near or at its disk budget")
    outbox_refused: int | None = Field(description="entries the station could not queue (outbox full) since start")
    camera_state: str | None
    door_state: str | None
    clock_offset_s: float | None = Field(description="station clock minus server clock, as the station estimated it")
    uptime_s: float | None


def _public(c: ChangeConfirmations) -> ChangeConfirmationsPublic:
    return ChangeConfirmationsPublic(
        version=c.version,
        op=c.op,
        worker_id=c.worker_id,
        created_at=c.created_at,
        confirmed=c.confirmed,
        total=c.total,
        summary=f"{c.op} confirmed by {c.confirmed} of {c.total} station{'s' if c.total != 1 else ''}",
        stations=[StationConfirmationPublic.model_validate(s) for s in c.stations],
    )


@router.get("/changes/{version}", response_model=ChangeConfirmationsPublic)
def read_change(version: Annotated[int, Path(ge=1, le=2**62)], session: SessionDep) -> ChangeConfirmationsPublic:
    return _public(stations.change_confirmations(session=session, version=version))


@router.get("/workers/{worker_id}/sync", response_model=ChangeConfirmationsPublic)
def read_worker_sync(worker_id: WorkerIdPath, session: SessionDep) -> ChangeConfirmationsPublic:
    """The worker's newest change (enrollment, suspension, access, deletion) and who holds it."""
    return _public(stations.worker_confirmations(session=session, worker_id=worker_id))


@router.put("/workers/{worker_id}/access", response_model=AccessChanged)
def set_access(worker_id: WorkerIdPath, body: AccessUpdate, session: SessionDep, ingest: IngestDep) -> AccessChanged:
    try:
        worker, change = gallery.set_access(
            session=session,
            worker_id=worker_id,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
            stations=body.stations,
        )
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    if ingest is not None:
        ingest.publish_change(change)
    return AccessChanged(
        worker_id=worker.worker_id,
        valid_from=worker.valid_from,
        valid_until=worker.valid_until,
        stations=worker.stations,
        version=change.version,
    )


@router.get("/stations/{station_id}/status", response_model=StationStatusPublic)
def read_station_status(station_id: Annotated[str, Path(max_length=63)], session: SessionDep) -> StationStatusPublic:
    return StationStatusPublic.model_validate(stations.get_station(session=session, station_id=station_id))
