"""The server's MQTT side: stores entries, tracks stations, answers sync requests.

:class:`Ingest` owns one :class:`~core.mqtt.MqttLink` with a fixed client id
and a persistent session (``clean_start`` False), so the broker queues QoS 1
messages for the server while it is down.

Entries are stored *inside* the message handler, on purpose: paho acknowledges
a QoS 1 message (PUBACK) only after the handler returns, so an entry is
acknowledged once it is committed, and one that was not committed (server
killed mid-way) is delivered again. The insert ignores an event_id it already
holds, which makes redelivery harmless. A known gap: when the database itself
fails (down, or locked past the 30 s busy timeout) the handler logs the event
id and counts an error, but paho still acknowledges the message, because
MqttLink offers no manual acknowledgement yet. Sync replies, which may be many
pages, are built on a separate thread so the network loop keeps moving.

Every payload that is refused is logged on one line and counted in
:attr:`Ingest.counters`; no handler ever raises.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.mqtt import MqttLink, MqttSettings
from models import topics
from models.errors import ContractError, PayloadTooLarge
from models.messages import EntryEvent, GalleryChange, GalleryChangeMessage, StationStatus, SyncAck, SyncRequest
from models.messages import decode, encode
from server.config import ServerSettings
from server.db import make_sessionmaker
from server.entries import store_event
from server.stations import is_registered, record_ack, record_status
from server.sync import build_replies

log = logging.getLogger(__name__)

# The messages a station sends; each names its station, which must match the topic's.
StationMessage = TypeVar("StationMessage", EntryEvent, StationStatus, SyncRequest, SyncAck)

COUNTER_NAMES = (
    "stored",
    "duplicates",
    "statuses",
    "acks",
    "sync_requests",
    "sync_pages",
    "rejected_malformed",
    "rejected_too_large",
    "rejected_topic_mismatch",
    "rejected_unknown_station",
    "errors",
)
PREVIEW_CHARS = 200


def mqtt_settings(settings: ServerSettings) -> MqttSettings:
    return MqttSettings(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=settings.mqtt_client_id,
        username=settings.mqtt_username,
        password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        tls_ca=str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None,
        clean_start=False,
    )


class Ingest:
    """Subscribes to every station's entry, status and sync topics and publishes gallery changes."""

    def __init__(self, settings: ServerSettings, engine: Engine, *, link: MqttLink | None = None) -> None:
        self.settings = settings
        self._sessions = make_sessionmaker(engine)
        self.link = link or MqttLink(mqtt_settings(settings))
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._sync_pool: ThreadPoolExecutor | None = None
        self.link.subscribe(topics.ALL_ENTRIES, self._guarded(self._on_entry), qos=1)
        self.link.subscribe(topics.ALL_STATUS, self._guarded(self._on_status), qos=1)
        self.link.subscribe(topics.ALL_SYNC_REQUESTS, self._guarded(self._on_sync_request), qos=1)
        self.link.subscribe(topics.ALL_SYNC_ACKS, self._guarded(self._on_sync_ack), qos=1)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (the broker may come up later; paho retries)."""
        if self._sync_pool is None:
            self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-reply")
        self.link.start()

    def stop(self) -> None:
        self.link.stop()
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=True, cancel_futures=True)
            self._sync_pool = None

    @property
    def connected(self) -> bool:
        return self.link.connected

    def wait_connected(self, timeout: float) -> bool:
        return self.link.wait_connected(timeout)

    @property
    def counters(self) -> dict[str, int]:
        """A copy of the counters (stored, duplicates, rejected_*, ...)."""
        with self._lock:
            return dict(self._counters)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    # -- publishing ---------------------------------------------------------------
    def publish_change(self, change: GalleryChange) -> bool:
        """Broadcast a committed gallery change to every station (QoS 1).

        False when the broker is unreachable; stations then get the change
        with their next sync request, so nothing is lost.
        """
        sent = self.link.publish(topics.GALLERY_CHANGE, encode(GalleryChangeMessage(change=change)), qos=1)
        if not sent:
            log.warning("gallery change %s (%s) not broadcast: MQTT is disconnected", change.version, change.op.value)
        return sent

    # -- handlers (paho's network thread) -------------------------------------------
    def _guarded(self, handler: Callable[[str, bytes], None]) -> Callable[[str, bytes], None]:
        def run(topic: str, payload: bytes) -> None:
            try:
                handler(topic, payload)
            except Exception:  # a database outage or a bug: log, count, keep the loop alive
                self._count("errors")
                log.exception("handling a message on %s failed", topic)

        return run

    def _accept(
        self, session: Session, topic: str, payload: bytes, cls: type[StationMessage]
    ) -> StationMessage | None:
        """Decode, and check the payload's station against the topic's and the register.

        None (logged and counted) if the message is refused.
        """
        try:
            station = topics.station_of(topic)
        except ValueError as err:
            return self._reject("rejected_topic_mismatch", topic, payload, str(err))
        try:
            message = decode(payload, cls)
        except PayloadTooLarge as err:
            return self._reject("rejected_too_large", topic, payload, str(err))
        except ContractError as err:
            return self._reject("rejected_malformed", topic, payload, str(err))
        if message.station_id != station:
            why = f"payload names station {message.station_id!r}, the topic {station!r}"
            return self._reject("rejected_topic_mismatch", topic, payload, why)
        if not is_registered(session=session, station_id=station):
            why = f"station {station!r} is not registered"
            return self._reject("rejected_unknown_station", topic, payload, why)
        return message

    def _reject(self, counter: str, topic: str, payload: bytes, why: str) -> None:
        self._count(counter)
        preview = payload[:PREVIEW_CHARS].decode("utf-8", "backslashreplace")
        log.warning("refused message on %s (%d bytes): %s | %r", topic, len(payload), why[:PREVIEW_CHARS], preview)
        return None

    def _on_entry(self, topic: str, payload: bytes) -> None:
        with self._sessions() as session:
            event = self._accept(session, topic, payload, EntryEvent)
            if event is None:
                return
            try:
                new = store_event(session=session, event=event)
            except SQLAlchemyError:
                # The message is acknowledged anyway (see the module docstring): name the event.
                log.error("entry %s from %s could not be stored", event.event_id, event.station_id)
                raise
        self._count("stored" if new else "duplicates")

    def _on_status(self, topic: str, payload: bytes) -> None:
        with self._sessions() as session:
            status = self._accept(session, topic, payload, StationStatus)
            if status is None:
                return
            record_status(session=session, status=status)
        self._count("statuses")

    def _on_sync_ack(self, topic: str, payload: bytes) -> None:
        with self._sessions() as session:
            ack = self._accept(session, topic, payload, SyncAck)
            if ack is None:
                return
            record_ack(session=session, ack=ack)
        self._count("acks")

    def _on_sync_request(self, topic: str, payload: bytes) -> None:
        with self._sessions() as session:
            request = self._accept(session, topic, payload, SyncRequest)
        if request is None:
            return
        self._count("sync_requests")
        pool = self._sync_pool
        if pool is not None:
            pool.submit(self._guarded(self._reply), topic, payload)

    def _reply(self, topic: str, payload: bytes) -> None:
        """Publish every page answering an (already accepted) sync request; runs on the sync thread."""
        request = decode(payload, SyncRequest)
        reply_topic = topics.sync_reply(request.station_id)
        with self._sessions() as session:
            for reply in build_replies(session=session, request=request, page_size=self.settings.sync_page_size):
                if not self.link.publish(reply_topic, encode(reply), qos=1):
                    # The station repeats its request when the last page does not arrive.
                    log.warning(
                        "sync reply to %s stopped at page %d: MQTT is disconnected", request.station_id, reply.page
                    )
                    return
                self._count("sync_pages")
        log.info(
            "answered sync request of %s since version %d with %d page(s)%s, latest version %d",
            request.station_id,
            request.since_version,
            reply.page + 1,
            " (snapshot)" if reply.snapshot else "",
            reply.latest_version,
        )
