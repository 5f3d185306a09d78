"""Keeps the station's enrollment cache in step with the server, and its entries flowing to it.

On every (re)connect the station publishes a retained *online* StationStatus
(the broker publishes the retained *offline* one as the last will) and a
SyncRequest for everything after the version it holds. While running it
republishes the status every ``status.heartbeat_s`` as its heartbeat
(status/2: outbox, camera and door state, clock offset, uptime).

Version rule: the station's held version V means "every change up to V is
applied". A live change with version V+1 is applied and advances V. A live
change further ahead is applied at once for its worker (a deletion must not
wait) but does not advance V past the gap: the station asks for a sync
instead, and the reply fills the gap. Per worker, the store ignores changes
not newer than what it holds, so replays and overlaps are harmless.
Sync replies are buffered page by page and applied in one transaction when
the last page (``more`` false) arrives, so the matcher never sees half a
snapshot. After each apply the station publishes SyncAck(V), swaps the
matcher's Gallery and calls ``on_gallery``.

Access: the gallery holds only workers this station may grant now: active,
on the access list (or without one) and inside their validity window. When a
window opens or closes the gallery is rebuilt at that moment.

Outbox budget: entries wait in SQLite up to ``outbox.max_mb``. Past
``outbox.warn_fraction`` of it a warning is logged and the heartbeat says
``outbox_alarm``; an entry that does not fit any more is *not* queued: it is
logged in full at ERROR level (the system journal keeps it) and counted in
the heartbeat's ``outbox_refused``. The door is never blocked by a full outbox.

MQTT handlers run on paho's thread; they only queue the payload. One worker
thread decodes and applies. Bad payloads are logged, counted and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from core.matcher import Gallery
from core.mqtt import MqttLink, MqttSettings
from edge import __version__
from edge.config import EdgeSettings
from edge.gallery import GalleryHolder
from edge.outbox import OutboxDrainer
from edge.store import EdgeStore, OutboxFull
from edge.sync_config import OutboxConfig, StatusConfig
from models import topics
from models.errors import ContractError
from models.messages import (
    EntryEvent,
    GalleryChange,
    GalleryChangeMessage,
    StationStatus,
    SyncAck,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)

log = logging.getLogger(__name__)

GalleryCallback = Callable[[Gallery, dict[str, str]], None]
HealthProvider = Callable[[], Mapping[str, str]]
"""Returns the devices' states for the heartbeat, e.g. ``{"camera": "ok", "door": "locked"}``."""

_ALARM_CLEAR_MARGIN = 0.1  # the alarm clears once usage falls this far below warn_fraction


def status_payload(station_id: str, *, online: bool, gallery_version: int = 0, outbox_depth: int = 0) -> bytes:
    return encode(
        StationStatus(
            station_id=station_id,
            online=online,
            agent_version=__version__,
            gallery_version=gallery_version,
            outbox_depth=outbox_depth,
        )
    )


def build_link(settings: EdgeSettings) -> MqttLink:
    """The station's MQTT connection: fixed client id, persistent session, retained offline last will."""
    m = settings.mqtt
    link_settings = MqttSettings(
        host=m.host,
        port=m.port,
        client_id=m.client_id or f"station-{settings.station_id}",
        username=m.username,
        password=m.password.get_secret_value() if m.password is not None else None,
        tls_ca=str(m.tls_ca) if m.tls_ca else None,
        keepalive=m.keepalive_s,
        clean_start=False,  # the broker keeps gallery changes for us while we are away
    )
    will = (topics.status(settings.station_id), status_payload(settings.station_id, online=False), 1, True)
    return MqttLink(link_settings, will=will)


@dataclass
class SyncStats:
    bad_payloads: int = 0
    changes_applied: int = 0
    sync_requests: int = 0
    acks_sent: int = 0
    stale_replies: int = 0
    heartbeats: int = 0
    outbox_refused: int = 0


class StationSync:
    def __init__(
        self,
        settings: EdgeSettings,
        store: EdgeStore,
        link: MqttLink,
        *,
        gallery: GalleryHolder | None = None,
        on_gallery: GalleryCallback | None = None,
        resync_after_s: float = 10.0,
        outbox: OutboxConfig | None = None,
        status: StatusConfig | None = None,
        health: HealthProvider | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.settings = settings
        self.station_id = settings.station_id
        self.store = store
        self.link = link
        self.now = now
        self.holder = gallery or GalleryHolder(store.load_gallery(now()), store.display_names())
        self.on_gallery = on_gallery
        self.resync_after_s = resync_after_s
        self.outbox_config = outbox or getattr(settings, "outbox", None) or OutboxConfig()
        self.status_config = status or getattr(settings, "status", None) or StatusConfig()
        self.health = health
        store.outbox_limit_bytes = self.outbox_config.max_bytes
        self.stats = SyncStats()
        self.outbox = OutboxDrainer(store, link, max_in_flight=settings.mqtt.max_in_flight)
        self.clock_offset_s: float | None = None
        self.outbox_alarm = False
        self._started_at = time.monotonic()
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._request_id: uuid.UUID | None = None
        self._request_at = 0.0
        self._request_wall = now()
        self._pages: list[GalleryChange] = []
        self._next_page = 0
        self._next_heartbeat = 0.0
        self._next_validity: datetime | None = store.next_validity_change(now())

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        """Subscribe, start the worker and the outbox drainer, then connect (in the background)."""
        if self._thread is not None:
            return
        self._started_at = time.monotonic()
        self.link.subscribe(topics.GALLERY_CHANGE, lambda _t, p: self._inbox.put(("change", p)))
        self.link.subscribe(topics.sync_reply(self.station_id), lambda _t, p: self._inbox.put(("reply", p)))
        self.link.on_connected(self._connected)
        self.link.on_disconnected(self.outbox.connection_lost)
        self._thread = threading.Thread(target=self._run, name="station-sync", daemon=True)
        self._thread.start()
        self.outbox.start()
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker, say offline (retained), stop the drainer, disconnect."""
        if self._thread is None:
            return
        # The worker first: an "online" status it might still publish must not follow the "offline" one.
        self._inbox.put(None)
        self._thread.join(timeout)
        self._thread = None
        if self.link.connected:
            # An entry decided just before the stop should leave now rather than at the next start.
            self.outbox.flush(min(timeout, 2.0))
            sent = threading.Event()
            payload = status_payload(self.station_id, online=False, gallery_version=self.store.gallery_version(),
                                     outbox_depth=self.store.depth())
            if self.link.publish(topics.status(self.station_id), payload, retain=True, on_acked=sent.set):
                sent.wait(min(timeout, 2.0))
        self.outbox.stop(timeout)
        self.link.stop()

    def enqueue(self, event: EntryEvent) -> bool:
        """Put an entry event in the durable outbox (committed on return) and wake the drainer.

        False when the outbox is full: the event is then logged in full and
        counted, never silently dropped, and never raised to the door loop.
        """
        try:
            self.store.enqueue(event)
        except OutboxFull as err:
            self.stats.outbox_refused += 1
            log.error("outbox full, entry NOT queued (%s): %s", err, encode(event).decode())
            self._check_outbox_alarm(force=True)
            return False
        self._check_outbox_alarm()
        self.outbox.wake()
        return True

    def request_sync(self) -> None:
        self._inbox.put(("resync", b""))

    def heartbeat_now(self) -> None:
        """Publish a heartbeat at once (e.g. when the door or camera state changed)."""
        self._inbox.put(("heartbeat", b""))

    # -- paho's thread: hand off only -------------------------------------------------
    def _connected(self) -> None:
        self._inbox.put(("connected", b""))
        self.outbox.wake()

    # -- worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        self._next_heartbeat = time.monotonic() + self.status_config.heartbeat_s
        while True:
            try:
                item = self._inbox.get(timeout=self._wait_s())
            except queue.Empty:
                item = ("tick", b"")
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "connected":
                    self._publish_status()
                    self._send_request()
                elif kind == "resync":
                    self._send_request()
                elif kind == "change":
                    self._on_change(payload)
                elif kind == "reply":
                    self._on_reply(payload)
                elif kind == "heartbeat":
                    self._publish_status()
                self._timers()
            except ContractError as err:
                self.stats.bad_payloads += 1
                log.warning("sync: ignored a bad %s payload (%d bytes): %s", kind, len(payload), one_line(str(err)))
            except Exception:
                log.exception("sync: handling a %s message failed", kind)

    def _wait_s(self) -> float:
        wait = self._next_heartbeat - time.monotonic()
        if self._next_validity is not None:
            wait = min(wait, (self._next_validity - self.now()).total_seconds())
        return min(max(wait, 0.0), 3600.0)

    def _timers(self) -> None:
        if self._next_validity is not None and self.now() >= self._next_validity:
            log.info("sync: a validity window opened or closed; rebuilding the gallery")
            self._swap_gallery()
        if time.monotonic() >= self._next_heartbeat:
            self._publish_status()

    def _send_request(self) -> None:
        held = self.store.gallery_version()
        request = SyncRequest(station_id=self.station_id, since_version=held)
        self._request_id, self._request_at = request.request_id, time.monotonic()
        self._request_wall = self.now()
        self._pages, self._next_page = [], 0
        if self.link.publish(topics.sync_request(self.station_id), encode(request)):
            self.stats.sync_requests += 1
            log.info("sync: asked for changes after version %d", held)

    def _apply(self, changes: list[GalleryChange], *, snapshot: bool, latest_version: int | None) -> int:
        return self.store.apply_changes(
            changes, snapshot=snapshot, latest_version=latest_version, station_id=self.station_id
        )

    def _on_change(self, payload: bytes) -> None:
        change = decode(payload, GalleryChangeMessage).change
        held = self.store.gallery_version()
        if change.version <= held:
            return  # already included in what we hold
        if change.version == held + 1:
            version = self._apply([change], snapshot=False, latest_version=change.version)
            self._applied(version, 1)
            return
        # A gap: apply this worker's change now, but only a sync may advance the held version.
        self._apply([change], snapshot=False, latest_version=None)
        self._applied(None, 1)
        recent = self._request_id is not None and time.monotonic() - self._request_at < self.resync_after_s
        if not recent:
            log.info("sync: change %d arrived while holding %d; asking for the missing ones", change.version, held)
            self._send_request()

    def _on_reply(self, payload: bytes) -> None:
        reply = decode(payload, SyncReply)
        if reply.request_id != self._request_id:
            self.stats.stale_replies += 1
            return
        if reply.page != self._next_page:
            log.warning("sync: reply page %d arrived, expected %d; asking again", reply.page, self._next_page)
            self._send_request()
            return
        if reply.page == 0 and reply.server_time is not None:
            self._estimate_clock_offset(reply.server_time)
        self._pages.extend(reply.changes)
        self._next_page += 1
        if reply.more:
            return
        changes, self._pages, self._request_id = self._pages, [], None
        version = self._apply(changes, snapshot=reply.snapshot, latest_version=reply.latest_version)
        log.info("sync: applied %s of %d change(s); holding version %d",
                 "a snapshot" if reply.snapshot else "a reply", len(changes), version)
        self._applied(version, len(changes))

    def _estimate_clock_offset(self, server_time: datetime) -> None:
        """Station clock minus server clock, taking the server's clock at the middle of the round trip."""
        round_trip = time.monotonic() - self._request_at
        local_mid = self._request_wall.timestamp() + round_trip / 2
        self.clock_offset_s = round(local_mid - server_time.timestamp(), 3)

    def _applied(self, version: int | None, n: int) -> None:
        self.stats.changes_applied += n
        gallery, names = self._swap_gallery()
        if version is not None:
            ack = SyncAck(station_id=self.station_id, version=version)
            if self.link.publish(topics.sync_ack(self.station_id), encode(ack)):
                self.stats.acks_sent += 1
            self._publish_status()
        if self.on_gallery is not None:
            try:
                self.on_gallery(gallery, names)
            except Exception:
                log.exception("sync: the on_gallery callback failed")

    def _swap_gallery(self) -> tuple[Gallery, dict[str, str]]:
        now = self.now()
        gallery, names = self.store.load_gallery(now), self.store.display_names()
        self.holder.swap(gallery, names)
        self._next_validity = self.store.next_validity_change(now)
        return gallery, names

    # -- status and heartbeat -----------------------------------------------------------
    def _check_outbox_alarm(self, *, force: bool = False) -> None:
        limit = self.store.outbox_limit_bytes
        if not limit:
            return
        used = self.store.outbox_bytes / limit
        warn = self.outbox_config.warn_fraction
        if not self.outbox_alarm and (force or used >= warn):
            self.outbox_alarm = True
            log.warning(
                "outbox alarm: %.0f%% of its %.0f MiB budget used (%d events waiting); when full, new entries "
                "are logged and not queued", used * 100, limit / 2**20, self.store.depth(),
            )
            self.heartbeat_now()
        elif self.outbox_alarm and used < warn - _ALARM_CLEAR_MARGIN:
            self.outbox_alarm = False
            log.info("outbox alarm cleared: %.0f%% of the budget used", used * 100)
            self.heartbeat_now()

    def heartbeat(self) -> StationStatus:
        """The status this station would publish now."""
        health = dict(self.health()) if self.health is not None else {}
        self._check_outbox_alarm()
        return StationStatus(
            station_id=self.station_id,
            online=True,
            agent_version=__version__,
            gallery_version=self.store.gallery_version(),
            outbox_depth=self.store.depth(),
            at=self.now(),
            camera=_state(health.get("camera")),
            door=_state(health.get("door")),
            clock_offset_s=self.clock_offset_s,
            uptime_s=round(time.monotonic() - self._started_at, 1),
            outbox_bytes=self.store.outbox_bytes,
            outbox_limit_bytes=self.store.outbox_limit_bytes,
            outbox_alarm=self.outbox_alarm,
            outbox_refused=self.stats.outbox_refused,
        )

    def _publish_status(self) -> None:
        self._next_heartbeat = time.monotonic() + self.status_config.heartbeat_s
        if self.link.publish(topics.status(self.station_id), encode(self.heartbeat()), retain=True):
            self.stats.heartbeats += 1


def one_line(text: str) -> str:
    """``text`` with every non-printable character escaped: a hostile payload cannot split a log line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _state(value: object) -> str:
    """A device state for the heartbeat; anything not a plain lower-case word becomes 'unknown'."""
    text = str(value) if value is not None else "unknown"
    ok = 1 <= len(text) <= 32 and text[0].isalpha() and all(c.islower() or c.isdigit() or c == "_" for c in text)
    return text if ok and text.isascii() else "unknown"
