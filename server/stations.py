"""Stations: registration, and what their status and sync messages tell the server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.messages import StationStatus, SyncAck
from models.topics import check_station_id
from server.errors import Conflict
from server.tables import Station, utcnow


def register_station(*, session: Session, station_id: str, name: str) -> Station:
    """Register a station; only registered stations may send entries or sync."""
    check_station_id(station_id)
    if session.get(Station, station_id) is not None:
        raise Conflict(f"station {station_id!r} is already registered")
    station = Station(station_id=station_id, name=name)
    session.add(station)
    try:
        session.commit()
    except IntegrityError as err:  # registered concurrently
        session.rollback()
        raise Conflict(f"station {station_id!r} is already registered") from err
    return station


def list_stations(*, session: Session) -> Sequence[Station]:
    return session.scalars(select(Station).order_by(Station.station_id)).all()


def is_registered(*, session: Session, station_id: str) -> bool:
    return session.get(Station, station_id) is not None


def record_status(*, session: Session, status: StationStatus, now: datetime | None = None) -> bool:
    """Store a station's heartbeat or last will; False if the station is not registered."""
    station = session.get(Station, status.station_id)
    if station is None:
        return False
    station.online = status.online
    # The offline form is the last will, written when the station connected:
    # its versions and outbox depth are stale, so only "offline" is taken from it.
    if status.online:
        station.agent_version = status.agent_version
        station.outbox_depth = status.outbox_depth
        station.gallery_version_acked = status.gallery_version
        # The station's own clock, so a retained status replayed to a restarted
        # server does not look fresh; never later than now (a fast station clock).
        station.last_seen_at = min(status.at, now or utcnow())
    session.commit()
    return True


def record_ack(*, session: Session, ack: SyncAck) -> bool:
    """Store the gallery version a station confirms it holds; False if not registered."""
    station = session.get(Station, ack.station_id)
    if station is None:
        return False
    station.gallery_version_acked = ack.version
    session.commit()
    return True
