"""Stations: registration, what their status and sync messages tell the server, and who confirmed what.

A station's acknowledged gallery version V means "every change up to V is
applied here" (see edge/sync.py), so a change with version N is confirmed by
exactly the stations whose acknowledged version is at least N: the per change,
per station view ("deleted on 3 of 4 stations") needs no table of its own.

Removing a station (:func:`remove_station`) deletes its row; its entries,
snapshots and usage counts keep the station id for audits. Workers limited to
a list of stations that names it lose it from their list, each with a gallery
change, so the other stations hold exactly what they held (a worker whose only
station it was may enter nowhere, never everywhere). Re-registering the id
later starts its config version above the one the removed station had
reached, because the station may still hold that config (it ignores older
ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.messages import GalleryChange, StationStatus, SyncAck
from models.topics import check_station_id
from server import audit, gallery
from server.errors import Conflict, NotFound
from server.tables import AuditEvent, GalleryChangeRow, Station, Worker, utcnow

REMOVE_ACTION = "station.remove"


def register_station(*, session: Session, station_id: str, name: str, **settings: str) -> Station:
    """Register a station (and commit whatever the session holds, e.g. its audit row).

    ``settings``: place, time_zone, opening_hours, mode (validated by the caller; absent: the defaults).
    Only registered stations may send entries or sync.
    """
    check_station_id(station_id)
    unknown = set(settings) - {"place", "time_zone", "opening_hours", "mode"}
    if unknown:
        raise TypeError(f"not a station setting: {', '.join(sorted(unknown))}")
    if session.get(Station, station_id) is not None:
        raise Conflict(f"station {station_id!r} is already registered")
    station = Station(station_id=station_id, name=name, config_version=_version_after_removal(session, station_id),
                      **settings)
    session.add(station)
    try:
        session.commit()
    except IntegrityError as err:  # registered concurrently
        session.rollback()
        raise Conflict(f"station {station_id!r} is already registered") from err
    return station


def _version_after_removal(session: Session, station_id: str) -> int:
    """0, or one more than the config version a removed station of this id had reached (its audit rows)."""
    details = session.scalars(
        select(AuditEvent.detail).where(AuditEvent.action == REMOVE_ACTION, AuditEvent.target == station_id)
    )
    reached = [d.get("config_version") for d in details if isinstance(d, dict)]
    return max((v + 1 for v in reached if isinstance(v, int)), default=0)


@dataclass(frozen=True)
class RemovedStation:
    station_id: str
    name: str
    config_version: int
    changes: list[GalleryChange]
    """One per worker whose station list named the station (broadcast them: server.api.deps.broadcast)."""


def remove_station(*, session: Session, station_id: str, actor: str) -> RemovedStation:
    """Delete a station's row, audited as ``station.remove``; NotFound if it is not registered.

    One transaction: the workers whose list names it (each with its gallery
    change), the audit row and the station row are committed together, or
    nothing is. The caller broadcasts the changes, then clears the station's
    retained config and broker login.
    """
    station = get_station(session=session, station_id=station_id)
    name, version = station.name, station.config_version
    limited = session.execute(
        select(Worker.worker_id, Worker.stations, Worker.valid_from, Worker.valid_until)
        .where(Worker.stations.is_not(None)).order_by(Worker.worker_id)
    ).all()
    changes = []
    for worker_id, listed, valid_from, valid_until in limited:
        if station_id in (listed or ()):
            _worker, change = gallery.set_access(
                session=session, worker_id=worker_id, valid_from=valid_from, valid_until=valid_until,
                stations=[s for s in listed if s != station_id], commit=False,
            )
            changes.append(change)
    station = get_station(session=session, station_id=station_id)
    audit.record(session, actor=actor, action=REMOVE_ACTION, target=station_id, detail={
        "name": name, "config_version": version, "workers": [c.worker_id for c in changes]})
    session.delete(station)
    session.commit()
    return RemovedStation(station_id, name, version, changes)


def list_stations(*, session: Session) -> Sequence[Station]:
    return session.scalars(select(Station).order_by(Station.station_id)).all()


def get_station(*, session: Session, station_id: str) -> Station:
    station = session.get(Station, station_id)
    if station is None:
        raise NotFound(f"no station with id {station_id!r}")
    return station


def is_registered(*, session: Session, station_id: str) -> bool:
    return session.get(Station, station_id) is not None


def record_status(*, session: Session, status: StationStatus, now: datetime | None = None) -> bool:
    """Store a station's heartbeat or last will; False if the station is not registered."""
    station = session.get(Station, status.station_id)
    if station is None:
        return False
    now = now or utcnow()
    station.online = status.online
    # The offline form is the last will, written when the station connected:
    # its versions and outbox depth are stale, so only "offline" is taken from it.
    if status.online:
        station.agent_version = status.agent_version
        station.outbox_depth = status.outbox_depth
        _set_acked(station, status.gallery_version, now)
        # The station's own clock, so a retained status replayed to a restarted
        # server does not look fresh; never later than now (a fast station clock).
        station.last_seen_at = min(status.at, now)
        if status.schema_ == "status/2":  # a heartbeat with the details
            station.heartbeat_at = station.last_seen_at
            station.camera_state = status.camera
            station.door_state = status.door
            station.clock_offset_s = status.clock_offset_s
            station.uptime_s = status.uptime_s
            station.outbox_bytes = status.outbox_bytes
            station.outbox_limit_bytes = status.outbox_limit_bytes
            station.outbox_alarm = status.outbox_alarm
            station.outbox_refused = status.outbox_refused
    session.commit()
    return True


def record_ack(*, session: Session, ack: SyncAck, now: datetime | None = None) -> bool:
    """Store the gallery version a station confirms it holds; False if not registered."""
    station = session.get(Station, ack.station_id)
    if station is None:
        return False
    _set_acked(station, ack.version, now or utcnow())
    session.commit()
    return True


def _set_acked(station: Station, version: int, now: datetime) -> None:
    if station.gallery_version_acked != version or station.gallery_acked_at is None:
        station.gallery_acked_at = now
    station.gallery_version_acked = version


# -- confirmations -------------------------------------------------------------------------


@dataclass(frozen=True)
class StationConfirmation:
    station_id: str
    name: str
    confirmed: bool
    acked_version: int
    acked_at: datetime | None
    online: bool


@dataclass(frozen=True)
class ChangeConfirmations:
    """One gallery change and, per registered station, whether it holds it."""

    version: int
    op: str
    worker_id: str
    created_at: datetime
    stations: list[StationConfirmation]

    @property
    def confirmed(self) -> int:
        return sum(1 for s in self.stations if s.confirmed)

    @property
    def total(self) -> int:
        return len(self.stations)


def change_confirmations(*, session: Session, version: int) -> ChangeConfirmations:
    """Which stations hold gallery change ``version``; NotFound if no such change was issued."""
    row = session.get(GalleryChangeRow, version)
    if row is None:
        raise NotFound(f"no gallery change with version {version}")
    return _confirmations(session, row)


def worker_confirmations(*, session: Session, worker_id: str) -> ChangeConfirmations:
    """The confirmations of the newest change of a worker (also of a deleted one)."""
    newest = session.scalar(
        select(func.max(GalleryChangeRow.version)).where(GalleryChangeRow.worker_id == worker_id)
    )
    if newest is None:
        raise NotFound(f"no gallery change for worker {worker_id!r}")
    row = session.get(GalleryChangeRow, newest)
    assert row is not None
    return _confirmations(session, row)


def _confirmations(session: Session, row: GalleryChangeRow) -> ChangeConfirmations:
    stations = [
        StationConfirmation(
            station_id=s.station_id,
            name=s.name,
            confirmed=s.gallery_version_acked >= row.version,
            acked_version=s.gallery_version_acked,
            acked_at=s.gallery_acked_at,
            online=s.online,
        )
        for s in list_stations(session=session)
    ]
    return ChangeConfirmations(
        version=row.version, op=row.op, worker_id=row.worker_id, created_at=row.created_at, stations=stations
    )
