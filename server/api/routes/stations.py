"""Stations: register, list and remove.

Removal (``DELETE /api/stations/{station_id}``, admins and the API token) is
the same as on the station's page: :func:`finish_removal` does what follows
the database. Its response header ``Waystation-Broker-Login`` says what
happened to the station's broker login (:data:`LOGIN_OUTCOMES`).
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Request, Response, status

from server import audit, stations
from server.api.deps import AppContext, IngestDep, SessionDep, broadcast
from server.api.schemas import StationCreate, StationPublic, StationsPublic
from server.provision import ProvisionError, remove_broker_login

log = logging.getLogger(__name__)
router = APIRouter(prefix="/stations", tags=["stations"])

LoginOutcome = Literal["deleted", "not-found", "manual", "failed"]
LOGIN_OUTCOMES: tuple[str, ...] = ("deleted", "not-found", "manual", "failed")
"""deleted: removed from mqtt_password_file (refused after the broker's reload); not-found: the file had no such
user; manual: no password file is configured (remove the login by hand); failed: mosquitto_passwd failed (logged)."""


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StationPublic)
def register_station(body: StationCreate, request: Request, session: SessionDep, ingest: IngestDep) -> StationPublic:
    """Register a station (409 if its id is taken); only registered stations may send entries or sync."""
    audit.record(session, actor=_actor(request), action="station.register", target=body.station_id,
                 detail={"name": body.name})
    station = stations.register_station(session=session, station_id=body.station_id, name=body.name)
    if ingest is not None:  # its default mode and opening hours, retained for when it first connects
        ingest.configs.publish(station.station_id)
    return StationPublic.model_validate(station)


@router.get("", response_model=StationsPublic)
def list_stations(session: SessionDep) -> StationsPublic:
    return StationsPublic(items=[StationPublic.model_validate(s) for s in stations.list_stations(session=session)])


@router.delete("/{station_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def remove_station(station_id: str, request: Request, session: SessionDep) -> Response:
    """Remove a registered station (404 if there is none): see server/stations.py remove_station."""
    removed = stations.remove_station(session=session, station_id=station_id, actor=_actor(request))
    login = finish_removal(request.app.state.ctx, removed)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"Waystation-Broker-Login": login})


def finish_removal(ctx: AppContext, removed: stations.RemovedStation) -> LoginOutcome:
    """After the removal's commit: tell the stations, clear its retained config, delete its broker login.

    Each step is tried whatever the others do; the station is removed already.
    """
    sid = removed.station_id
    for change in removed.changes:  # other stations drop it from these workers' lists
        broadcast(ctx.ingest, change)
    if ctx.ingest is not None:
        ctx.ingest.forget_station(sid)  # its next messages are refused by this process at once
        try:
            ctx.ingest.configs.clear(sid)
        except Exception:  # the broker keeps a stale retained config; only this station could read it
            log.exception("station %s: clearing its retained config failed", sid)
    else:
        log.warning("station %s removed without an MQTT link here: its retained config stays on the broker", sid)
    try:
        done = remove_broker_login(settings=ctx.settings, station_id=sid)
    except ProvisionError as err:
        log.error("station %s removed, but its broker login was not: %s", sid, err)
        return "failed"
    if done is None:
        log.warning("station %s removed; no mqtt_password_file is configured: remove its broker login by hand", sid)
        return "manual"
    return "deleted" if done else "not-found"


def _actor(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    return principal.actor if principal is not None else audit.API_TOKEN
