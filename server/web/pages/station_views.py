"""What the stations pages show about a station, and its provisioning bundle.

Online/offline is what the station's retained status says (its last will
turns it offline when its connection drops without a goodbye). Alarms:
door held open, forced open and tamper events in the last 24 hours (the
entries the door sent), a camera the heartbeat reports as not working while
the station is online, and an outbox near its disk budget.

The bundle (``station.yaml``, ``station.env`` with the broker password,
``ca.crt``) is made by server/provision.py and handed out once: it waits in
this process's memory for at most 15 minutes, under a random token, until the
admin downloads it. The password is nowhere else (the broker keeps a hash).
"""

from __future__ import annotations

import io
import secrets
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.i18n import Translator
from models.messages import Decision, EventKind
from models.station_config import is_valid_opening_hours
from server.config import ServerSettings
from server.provision import provision_station
from server.tables import Entry, Station, Worker, utcnow
from server.web.templating import N_

ALARM_WINDOW = timedelta(hours=24)
HEARTBEAT_LATE = timedelta(minutes=5)  # stations beat every minute by default (edge StatusConfig.heartbeat_s)
CAMERA_OK = frozenset({"ok", "starting"})
MODES = {"face": N_("Face"), "qr": N_("QR code"), "face_or_qr": N_("Face or QR code"),
         "qr_then_face": N_("QR code, then face")}
CAMERA_STATES = {"ok": N_("working"), "starting": N_("starting"), "stalled": N_("no pictures"),
                 "unknown": N_("unknown")}
"""The heartbeat's camera states (edge/agent.py); another state is shown as the station sent it."""
DOOR_STATES = {"locked": N_("locked"), "unlocked": N_("unlocked"), "unknown": N_("unknown")}
KINDS = {
    EventKind.FACE.value: N_("Face"),
    EventKind.QR.value: N_("QR code"),
    EventKind.EXIT_REQUEST.value: N_("Exit button"),
    EventKind.FORCED_OPEN.value: N_("Door forced open"),
    EventKind.HELD_OPEN.value: N_("Door held open"),
    EventKind.TAMPER.value: N_("Tamper"),
}
DECISIONS = {
    Decision.GRANTED.value: N_("Granted"), Decision.DENIED.value: N_("Denied"), Decision.SPOOF.value: N_("Spoof"),
}
ALARMS = {
    EventKind.HELD_OPEN.value: N_("Door held open"),
    EventKind.FORCED_OPEN.value: N_("Door forced open"),
    EventKind.TAMPER.value: N_("Tamper"),
    "camera_down": N_("Camera not working"),
    "outbox_full": N_("Outbox nearly full"),
}


@dataclass(frozen=True)
class Alarm:
    code: str
    count: int = 1
    last_at: datetime | None = None


@dataclass(frozen=True)
class StationView:
    station: Station
    latest_version: int
    alarms: tuple[Alarm, ...]
    now: datetime

    @property
    def heartbeat_at(self) -> datetime | None:
        return self.station.heartbeat_at or self.station.last_seen_at

    @property
    def heartbeat_late(self) -> bool:
        at = self.heartbeat_at
        return self.station.online and (at is None or self.now - at > HEARTBEAT_LATE)

    @property
    def versions_behind(self) -> int:
        return max(0, self.latest_version - self.station.gallery_version_acked)


def station_views(session: Session, stations: list[Station], latest_version: int) -> list[StationView]:
    """Each station with its alarms (one query for the alarm events of all of them)."""
    now = utcnow()
    recent: dict[str, list[Alarm]] = {}
    if stations:
        rows = session.execute(
            select(Entry.station_id, Entry.kind, func.count(), func.max(Entry.occurred_at))
            .where(Entry.occurred_at >= now - ALARM_WINDOW, Entry.kind.in_(tuple(ALARMS)[:3]),
                   Entry.station_id.in_([s.station_id for s in stations]))
            .group_by(Entry.station_id, Entry.kind)
        )
        for sid, kind, count, last in rows:
            recent.setdefault(sid, []).append(Alarm(kind, int(count), last))
    views = []
    for st in stations:
        alarms = sorted(recent.get(st.station_id, []), key=lambda a: a.code)
        if st.online and st.camera_state is not None and st.camera_state not in CAMERA_OK:
            alarms.append(Alarm("camera_down", 1, st.heartbeat_at))
        if st.online and st.outbox_alarm:
            alarms.append(Alarm("outbox_full", 1, st.heartbeat_at))
        views.append(StationView(st, latest_version, tuple(alarms), now))
    return views


@dataclass(frozen=True)
class RemovalFacts:
    """What removing a station changes beyond its own row, for the confirmation page."""

    limited_workers: int
    """Workers whose station list names it: it is dropped from their lists."""
    stranded_workers: int
    """Of those, the ones for whom it is the only station: afterwards they may enter nowhere."""


def removal_facts(session: Session, station: Station) -> RemovalFacts:
    lists = session.scalars(select(Worker.stations).where(Worker.stations.is_not(None)))
    naming = [listed for listed in lists if station.station_id in (listed or ())]
    return RemovalFacts(len(naming), sum(1 for listed in naming if len(listed) == 1))


def valid_opening_hours(text: str) -> bool:
    """"24h", ranges like "06:00-22:00, 20:00-06:00" every day, or per weekday "Mon-Fri 07:00-21:00; Sat 24h".

    The stations judge them with the same parser (models/station_config.py).
    """
    return is_valid_opening_hours(text)


Problem = str | tuple[str, dict[str, str]]
"""What a form check found: an English message id, or one with values (the opening hours' reasons)."""


def say(tr: Translator, problem: Problem) -> str:
    """A problem in the reader's language (the opening hours' reasons are translated in stations.po too)."""
    if isinstance(problem, str):
        return tr.gettext(problem)
    message, values = problem
    return tr.gettext(message, **values)


def make_bundle(settings: ServerSettings, station_id: str, name: str) -> bytes:
    """New broker credentials for a registered station, as a zip of its bundle folder (ProvisionError if not)."""
    with tempfile.TemporaryDirectory(prefix="ws-bundle-") as tmp:
        out = Path(tmp) / station_id
        done = provision_station(settings=settings, station_id=station_id, out_dir=out, name=name, rotate=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in (done.config_file, done.env_file, done.ca_file):
                if path is not None:
                    archive.write(path, f"{station_id}/{path.name}")
        return buffer.getvalue()


class BundleStore:
    """Bundles waiting for their one download, in memory, for at most ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float = 900.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, str, bytes]] = {}

    def put(self, station_id: str, data: bytes) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._expire()
            self._items[token] = (time.monotonic() + self.ttl_s, station_id, data)
        return token

    def waiting(self, station_id: str, token: str) -> bool:
        with self._lock:
            self._expire()
            item = self._items.get(token)
            return item is not None and item[1] == station_id

    def take(self, station_id: str, token: str) -> bytes | None:
        """The bundle, once; None if unknown, expired, taken already or for another station."""
        with self._lock:
            self._expire()
            item = self._items.get(token)
            if item is None or item[1] != station_id:
                return None
            del self._items[token]
            return item[2]

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, (until, _s, _d) in self._items.items() if until < now]:
            del self._items[token]


BUNDLES = BundleStore()
