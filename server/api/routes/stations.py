"""Stations: register and list."""

from __future__ import annotations

from fastapi import APIRouter, status

from server import stations
from server.api.deps import SessionDep
from server.api.schemas import StationCreate, StationPublic, StationsPublic

router = APIRouter(prefix="/stations", tags=["stations"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StationPublic)
def register_station(body: StationCreate, session: SessionDep) -> StationPublic:
    """Register a station (409 if its id is taken); only registered stations may send entries or sync."""
    station = stations.register_station(session=session, station_id=body.station_id, name=body.name)
    return StationPublic.model_validate(station)


@router.get("", response_model=StationsPublic)
def list_stations(session: SessionDep) -> StationsPublic:
    return StationsPublic(items=[StationPublic.model_validate(s) for s in stations.list_stations(session=session)])
