"""Keeps the station's enrollment cache in step with the server, and its entries flowing to it.

On every (re)connect the station publishes a retained *online* StationStatus
(the broker publishes the retained *offline* one as the last will) and a
SyncRequest for everything after the version it holds.

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

MQTT handlers run on paho's thread; they only queue the payload. One worker
thread decodes and applies. Bad payloads are logged, counted and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from core.matcher import Gallery
from core.mqtt import MqttLink, MqttSettings
from edge import __version__
from edge.config import EdgeSettings
from edge.gallery import GalleryHolder
from edge.outbox import OutboxDrainer
from edge.store import EdgeStore
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
    ) -> None:
        self.settings = settings
        self.station_id = settings.station_id
        self.store = store
        self.link = link
        self.holder = gallery or GalleryHolder(store.load_gallery(), store.display_names())
        self.on_gallery = on_gallery
        self.resync_after_s = resync_after_s
        self.stats = SyncStats()
        self.outbox = OutboxDrainer(store, link, max_in_flight=settings.mqtt.max_in_flight)
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._request_id: uuid.UUID | None = None
        self._request_at = 0.0
        self._pages: list[GalleryChange] = []
        self._next_page = 0

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        """Subscribe, start the worker and the outbox drainer, then connect (in the background)."""
        if self._thread is not None:
            return
        self.link.subscribe(topics.GALLERY_CHANGE, lambda _t, p: self._inbox.put(("change", p)))
        self.link.subscribe(topics.sync_reply(self.station_id), lambda _t, p: self._inbox.put(("reply", p)))
        self.link.on_connected(self._connected)
        self.link.on_disconnected(self.outbox.connection_lost)
        self._thread = threading.Thread(target=self._run, name="station-sync", daemon=True)
        self._thread.start()
        self.outbox.start()
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say offline (retained), stop the threads, disconnect."""
        if self._thread is None:
            return
        if self.link.connected:
            # An entry decided just before the stop should leave now rather than at the next start.
            self.outbox.flush(min(timeout, 2.0))
            sent = threading.Event()
            payload = status_payload(self.station_id, online=False, gallery_version=self.store.gallery_version(),
                                     outbox_depth=self.store.depth())
            if self.link.publish(topics.status(self.station_id), payload, retain=True, on_acked=sent.set):
                sent.wait(min(timeout, 2.0))
        self._inbox.put(None)
        self._thread.join(timeout)
        self._thread = None
        self.outbox.stop(timeout)
        self.link.stop()

    def enqueue(self, event: EntryEvent) -> None:
        """Put an entry event in the durable outbox (committed on return) and wake the drainer."""
        self.store.enqueue(event)
        self.outbox.wake()

    def request_sync(self) -> None:
        self._inbox.put(("resync", b""))

    # -- paho's thread: hand off only -------------------------------------------------
    def _connected(self) -> None:
        self._inbox.put(("connected", b""))
        self.outbox.wake()

    # -- worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._inbox.get()
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
            except ContractError as err:
                self.stats.bad_payloads += 1
                log.warning("sync: ignored a bad %s payload (%d bytes): %s", kind, len(payload), err)
            except Exception:
                log.exception("sync: handling a %s message failed", kind)

    def _send_request(self) -> None:
        held = self.store.gallery_version()
        request = SyncRequest(station_id=self.station_id, since_version=held)
        self._request_id, self._request_at = request.request_id, time.monotonic()
        self._pages, self._next_page = [], 0
        if self.link.publish(topics.sync_request(self.station_id), encode(request)):
            self.stats.sync_requests += 1
            log.info("sync: asked for changes after version %d", held)

    def _on_change(self, payload: bytes) -> None:
        change = decode(payload, GalleryChangeMessage).change
        held = self.store.gallery_version()
        if change.version <= held:
            return  # already included in what we hold
        if change.version == held + 1:
            version = self.store.apply_changes([change], snapshot=False, latest_version=change.version)
            self._applied(version, 1)
            return
        # A gap: apply this worker's change now, but only a sync may advance the held version.
        self.store.apply_changes([change], snapshot=False, latest_version=None)
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
        self._pages.extend(reply.changes)
        self._next_page += 1
        if reply.more:
            return
        changes, self._pages, self._request_id = self._pages, [], None
        version = self.store.apply_changes(changes, snapshot=reply.snapshot, latest_version=reply.latest_version)
        log.info("sync: applied %s of %d change(s); holding version %d",
                 "a snapshot" if reply.snapshot else "a reply", len(changes), version)
        self._applied(version, len(changes))

    def _applied(self, version: int | None, n: int) -> None:
        self.stats.changes_applied += n
        gallery, names = self.store.load_gallery(), self.store.display_names()
        self.holder.swap(gallery, names)
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

    def _publish_status(self) -> None:
        payload = status_payload(
            self.station_id, online=True, gallery_version=self.store.gallery_version(), outbox_depth=self.store.depth()
        )
        self.link.publish(topics.status(self.station_id), payload, retain=True)
