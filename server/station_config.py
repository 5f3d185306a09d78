"""The server's side of the station config: publish each station's mode and opening hours, hear what it applied.

What an admin sets for a station (``Station.mode``, ``opening_hours``,
``time_zone``) reaches it as a retained :class:`~models.station_config.StationConfig`
on ``ws/v1/station/{sid}/config`` (models/station_config.py). It is published
when an admin changes one of those fields (the stations pages call
:meth:`StationConfigs.publish` after the commit) and for every station
whenever the server (re)connects to the broker, so the broker always holds a
current copy for a station that is offline now.

Version: ``stations.config_version`` (migration 0008), raised by one in the
same transaction as every change of one of those fields (:func:`mark_changed`;
registration starts a station at 0, or just above the version a removed
station of the same id had reached: server/stations.py). It survives restarts
of the server and the loss of the broker's retained store. Restoring an older
database makes versions go back: stations then ignore the config until the
next change (edit the station once).

Acknowledgements: a station answers every config it receives with a retained
``StationConfigAck`` (applied, or refused with the reason). Whichever ingest
process receives it stores it in the station's ``config_ack_*`` columns
(:func:`record_config_ack`), so the station page, which reads only the
database, shows it however many ingest workers share the subscriptions (a
shared subscription gets no retained copies: a restarted server learns an
answer it missed only from the station's next one; the database keeps the
last). An answer about an older version than the stored one is ignored.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.mqtt import MqttLink
from models import topics
from models.messages import encode
from models.station_config import StationConfig, StationConfigAck
from server.tables import Station, utcnow

log = logging.getLogger(__name__)

FIELDS = ("mode", "opening_hours", "time_zone")
"""The station settings that travel in the config; a change of another one (name, place) is not a new version."""
APPLIED, REFUSED = "applied", "refused"
"""``stations.config_ack_status``: what the station said about config ``config_ack_version``."""


def mark_changed(station: Station, now: datetime | None = None) -> None:
    """Give the station's config a new version; call in the transaction that changes one of FIELDS.

    Computed by the database (``config_version + 1`` in the UPDATE), so two admins saving at once on
    PostgreSQL get two versions, never the same one for two different configs.
    """
    station.config_version = Station.config_version + 1  # type: ignore[assignment]
    station.config_changed_at = now or utcnow()


def current_config(station: Station) -> StationConfig | None:
    """What the station should use now; None (logged) if its stored settings are not valid."""
    try:
        return StationConfig(
            station_id=station.station_id, version=station.config_version, mode=station.mode,
            opening_hours=station.opening_hours, time_zone=station.time_zone,
            updated_at=station.config_changed_at or station.created_at,
        )
    except ValidationError as err:  # written past the pages' checks (SQL by hand): never send it
        log.error("station %s: its settings are not valid, config not published: %s", station.station_id,
                  err.errors()[0].get("msg"))
        return None


def record_config_ack(*, session: Session, ack: StationConfigAck, now: datetime | None = None) -> bool | None:
    """Store a station's (validated) answer and commit; False if not registered, None if older than the stored one.

    Idempotent: the same answer again (a retained copy after a reconnect) changes nothing. An answer
    about the same version replaces the stored one unless it is older by the station's clock (the
    station may refuse a version, then apply it once its operator added the missing QR key). One
    guarded UPDATE, so two ingest processes storing two answers at once keep the newer one.
    """
    at = min(ack.at, now or utcnow())  # the station's clock, never later than ours
    stored_version, stored_at = Station.config_ack_version, Station.config_ack_at
    newer = or_(stored_version.is_(None), stored_version < ack.version,
                and_(stored_version == ack.version, or_(stored_at.is_(None), stored_at <= at)))
    result = session.execute(
        update(Station).where(Station.station_id == ack.station_id, newer).values(
            config_ack_version=ack.version, config_applied_version=ack.active_version,
            config_ack_status=APPLIED if ack.applied else REFUSED, config_ack_detail=ack.reason[:200] or None,
            config_ack_at=at,
        ).execution_options(synchronize_session=False)
    )
    stored = bool(getattr(result, "rowcount", 0))
    session.commit()
    if not stored:
        if session.get(Station, ack.station_id) is None:
            return False
        log.info("station %s: answer about config v%d ignored, a newer one is stored", ack.station_id, ack.version)
        return None
    if not ack.applied:
        log.warning("station %s refused config v%d: %s (it keeps v%s, mode %s)", ack.station_id, ack.version,
                    ack.reason, ack.active_version, ack.mode)
    return True


@dataclass(frozen=True)
class ConfigState:
    """For the station page: the server's config version and what the station last said (all from the database)."""

    version: int
    ack_version: int | None = None
    active_version: int | None = None
    """The config the station uses now (None: its own file's settings, or no answer yet)."""
    status: str | None = None
    reason: str = ""
    at: datetime | None = None

    @classmethod
    def of(cls, station: Station) -> "ConfigState":
        return cls(station.config_version, station.config_ack_version, station.config_applied_version,
                   station.config_ack_status, station.config_ack_detail or "", station.config_ack_at)

    @property
    def answered(self) -> bool:
        return self.ack_version is not None

    @property
    def applied(self) -> bool:
        return self.answered and self.active_version == self.version

    @property
    def refused(self) -> bool:
        return self.status == REFUSED and self.ack_version == self.version


class StationConfigs:
    """Publishes station configs on the ingest's MQTT link (the answers go to the database: record_config_ack)."""

    def __init__(self, link: MqttLink, sessions: sessionmaker[Session]) -> None:
        self.link = link
        self._sessions = sessions
        self._lock = threading.Lock()  # one publisher at a time: the broker keeps the newest copy
        self._published: dict[str, int] = {}
        self._republish = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        link.on_connected(self._republish.set)  # paho's thread: only wake ours

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="station-config", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._republish.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._republish.wait()
            self._republish.clear()
            if self._stopping.is_set():
                return
            try:
                n = self.publish_all()
                log.info("station configs published for %d station(s)", n)
            except Exception:  # the database may be down: the next (re)connect or change tries again
                log.exception("publishing the station configs failed")

    # -- publishing ---------------------------------------------------------------
    def publish(self, station_id: str) -> bool:
        """Publish the station's current config (retained, QoS 1); False if not sent now.

        paho keeps a QoS 1 message while disconnected and sends it on
        reconnect, and every reconnect publishes all configs again anyway.
        """
        with self._lock, self._sessions() as session:
            station = session.get(Station, station_id)
            if station is None:
                return False
            return self._publish(station)

    def publish_all(self) -> int:
        """Publish every registered station's config; returns how many were handed to the connection."""
        sent = 0
        with self._lock, self._sessions() as session:
            for station in session.scalars(select(Station).order_by(Station.station_id)):
                sent += self._publish(station)
        return sent

    def _publish(self, station: Station) -> bool:
        config = current_config(station)
        if config is None:
            return False
        sid = station.station_id
        if config.version < self._published.get(sid, -1):
            # Not from this process's own changes (versions only grow): the database was replaced under us.
            log.warning("station %s: config version went back from %d to %d", sid, self._published[sid],
                        config.version)
        self._published[sid] = config.version
        sent = self.link.publish(topics.station_config(sid), encode(config), qos=1, retain=True)
        log.info("station %s: config v%d (%s, hours %s %s) %s", sid, config.version, config.mode,
                 config.opening_hours, config.time_zone, "published" if sent else "queued until connected")
        return sent

    def clear(self, station_id: str) -> bool:
        """Remove the retained config and acknowledgement of a station that is no longer registered.

        False if not sent now (disconnected: paho sends both on reconnect).
        """
        with self._lock:
            self._published.pop(station_id, None)
            ok = self.link.publish(topics.station_config(station_id), b"", qos=1, retain=True)
            return self.link.publish(topics.station_config_ack(station_id), b"", qos=1, retain=True) and ok
