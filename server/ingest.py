"""The server's MQTT side: stores entries, tracks stations, answers sync requests.

:class:`Ingest` owns one :class:`~core.mqtt.MqttLink` with a fixed client id
and a persistent session (``clean_start`` False), so the broker queues QoS 1
messages for the server while it is down.

Acknowledged only once durable: the link runs with manual acknowledgement.
paho's network thread only queues each message; one ingest thread takes
whatever has queued up (at most ``ingest_batch_max`` entries), stores the
entries in one transaction and acknowledges them (PUBACK) after the commit.
When the database fails, the batch is retried with back-off and nothing is
acknowledged meanwhile; if the server stops or dies first, the broker delivers
the unacknowledged messages again on the next connect. The insert ignores
event ids already stored, so such redeliveries are harmless. An event the
database refuses for its content (e.g. a NUL character on PostgreSQL) is
logged, counted as ``rejected_unstorable`` and acknowledged, so one bad event
never blocks the rest.

Scale-out: with ``mqtt_protocol: "5"`` and ``mqtt_shared_group`` set,
several server processes (each with its own client id) subscribe as one MQTT 5
shared subscription group and the broker hands each message to one of them.

Sync replies, which may be many pages, are built on a separate thread. The
handlers of the messages other than entries are in server/ingest_handlers.py. Every
payload that is refused is logged on one line and counted in
:attr:`Ingest.counters`; no handler ever raises.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.mqtt import Delivery, MqttLink, MqttSettings
from models import topics
from models.errors import ContractError, PayloadTooLarge
from models.messages import EntryEvent, GalleryChange, GalleryChangeMessage, StationStatus, SyncAck, SyncRequest
from models.messages import decode, encode
from models.station_config import StationConfigAck
from server.config import ServerSettings
from server.db import make_sessionmaker
from server.ingest_handlers import StationMessages
from server.ingest_store import PERMANENT_ERRORS, store_events
from server.station_config import StationConfigs
from server.tables import Station

log = logging.getLogger(__name__)

# The messages a station sends; each names its station, which must match the topic's.
StationMessage = TypeVar("StationMessage", EntryEvent, StationStatus, SyncAck, SyncRequest, StationConfigAck)
T = TypeVar("T")

COUNTER_NAMES = (
    "stored",
    "duplicates",
    "statuses",
    "acks",
    "sync_requests",
    "sync_pages",
    "config_acks",
    "snapshots",
    "rejected_malformed",
    "rejected_too_large",
    "rejected_topic_mismatch",
    "rejected_unknown_station",
    "rejected_unstorable",
    "rejected_snapshot",
    "db_errors",
    "errors",
)
PREVIEW_CHARS = 200
_RETRY_MIN_S, _RETRY_MAX_S = 0.1, 5.0
KNOWN_STATION_TTL_S = 30.0
"""How long a station found registered is believed so without asking the database again (a removed station's
messages are refused at most this long after its removal by an ingest process other than the removing one)."""


class _Stopped(Exception):
    """The ingest is stopping: leave the message unacknowledged (the broker keeps it)."""


def mqtt_settings(settings: ServerSettings) -> MqttSettings:
    return MqttSettings(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=settings.mqtt_client_id,
        username=settings.mqtt_username,
        password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        tls_ca=str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None,
        clean_start=False,
        protocol=settings.mqtt_protocol,
        manual_ack=True,
    )


def subscription(topic_filter: str, shared_group: str | None) -> str:
    return f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter


class Ingest(StationMessages):
    """Subscribes to every station's entry, status and sync topics and publishes gallery changes."""

    def __init__(self, settings: ServerSettings, engine: Engine, *, link: MqttLink | None = None) -> None:
        self.settings = settings
        self._sessions = make_sessionmaker(engine)
        self.link = link or MqttLink(mqtt_settings(settings))
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._queue: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._sync_pool: ThreadPoolExecutor | None = None
        self._known_stations: dict[str, float] = {}  # station id -> when the database last said it is registered
        self.configs = StationConfigs(self.link, self._sessions)
        """Publishes each station's mode and opening hours, keeps their acknowledgements (server/station_config.py)."""
        self._stored_listeners: list[Callable[[list[EntryEvent]], None]] = []
        self._handlers: dict[str, Callable[[Delivery], None]] = {
            topics.ALL_STATUS: self._on_status,
            topics.ALL_SYNC_REQUESTS: self._on_sync_request,
            topics.ALL_SYNC_ACKS: self._on_sync_ack,
            topics.ALL_CONFIG_ACKS: self._on_config_ack,
            topics.ALL_SNAPSHOTS: self._on_snapshot,
        }
        group = settings.mqtt_shared_group
        for topic_filter in (topics.ALL_ENTRIES, *self._handlers):
            self.link.subscribe(subscription(topic_filter, group), self._enqueue, qos=1, deferred=True)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (the broker may come up later; paho retries)."""
        if self._worker is not None:
            return
        self._stopping.clear()
        # A fresh queue: what an earlier run left in it belongs to a connection whose acks are void anyway.
        self._queue = queue.SimpleQueue()
        self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-reply")
        self._worker = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._worker.start()
        self.configs.start()
        self.link.start()

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; messages not committed stay unacknowledged and come again."""
        self._stopping.set()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(30)
            self._worker = None
        self.configs.stop()
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

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def add_stored_listener(self, listener: Callable[[list[EntryEvent]], None], *, remove: bool = False) -> None:
        """(Un)register ``listener(new_events)``, called on the ingest thread after each commit
        (server/health.py's event lag). It must be quick; its exceptions are logged, never raised."""
        with self._lock:
            if remove:
                self._stored_listeners = [x for x in self._stored_listeners if x != listener]
            else:
                self._stored_listeners = [*self._stored_listeners, listener]

    def _tell_stored(self, accepted: list[tuple[Delivery, EntryEvent]], new: set[str]) -> None:
        for listener in self._stored_listeners if new else ():  # a list replaced, never changed: no lock
            try:
                listener(list({str(e.event_id): e for _, e in accepted if str(e.event_id) in new}.values()))
            except Exception:  # metrics must never cost an entry
                log.exception("a stored-events listener failed")

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

    def _enqueue(self, delivery: Delivery) -> None:  # paho's thread: hand off only
        self._queue.put(delivery)

    # -- the ingest thread ----------------------------------------------------------
    def _run(self) -> None:
        batch_max = self.settings.ingest_batch_max
        while not self._stopping.is_set():
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            try:
                self._process(batch)
            except _Stopped:
                return
            except Exception:  # a bug: log, count, keep ingesting (the batch stays unacknowledged)
                self._count("errors")
                log.exception("handling %d message(s) failed", len(batch))

    def _process(self, batch: list[Delivery]) -> None:
        entries: list[Delivery] = []
        for delivery in batch:
            if delivery.topic.endswith("/entry"):
                entries.append(delivery)
                continue
            if entries:
                self._store_entries(entries)
                entries = []
            self._handle_other(delivery)
        if entries:
            self._store_entries(entries)

    def _handle_other(self, delivery: Delivery) -> None:
        for topic_filter, handler in self._handlers.items():
            if topics_match(topic_filter, delivery.topic):
                try:
                    handler(delivery)
                except PERMANENT_ERRORS as err:
                    self._reject("rejected_unstorable", delivery, f"the database refused it: {err.__class__.__name__}")
                    delivery.ack()
                return
        delivery.ack()

    def _with_db(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` until it succeeds, retrying with back-off while the database fails.

        Errors caused by the data (PERMANENT_ERRORS) are raised at once; when
        the ingest stops while retrying, raises _Stopped.
        """
        delay, failed_at = _RETRY_MIN_S, 0.0
        while True:
            try:
                with self._sessions() as session:
                    result = fn(session)
                if failed_at:
                    log.warning("database available again after %.1f s; ingest continues", time.monotonic() - failed_at)
                return result
            except PERMANENT_ERRORS:
                raise
            except SQLAlchemyError as err:
                self._count("db_errors")
                if not failed_at:
                    failed_at = time.monotonic()
                    log.error(
                        "database unavailable (%s); messages stay unacknowledged at the broker, retrying: %s",
                        err.__class__.__name__,
                        str(err).splitlines()[0][:PREVIEW_CHARS],
                    )
            if self._stopping.wait(delay):
                raise _Stopped
            delay = min(delay * 2, _RETRY_MAX_S)

    def _registered(self, station_ids: set[str]) -> set[str]:
        now = time.monotonic()
        with self._lock:
            seen = {sid: self._known_stations.get(sid, -math.inf) for sid in station_ids}
        known = {sid for sid, at in seen.items() if now - at < KNOWN_STATION_TTL_S}
        unknown = station_ids - known
        if unknown:
            found = self._with_db(
                lambda s: set(s.scalars(select(Station.station_id).where(Station.station_id.in_(unknown))))
            )
            with self._lock:
                self._known_stations.update(dict.fromkeys(found, now))
            known |= found
        return known

    def forget_station(self, station_id: str) -> None:
        """A station was removed: refuse its messages from now on (other processes: after KNOWN_STATION_TTL_S)."""
        with self._lock:
            self._known_stations.pop(station_id, None)

    # -- decoding -------------------------------------------------------------------
    def _accept(self, delivery: Delivery, cls: type[StationMessage]) -> StationMessage | None:
        """Decode, and check the payload's station against the topic's and the register.

        None (logged, counted and acknowledged) if the message is refused.
        """
        try:
            station = topics.station_of(delivery.topic)
        except ValueError as err:
            return self._refuse("rejected_topic_mismatch", delivery, str(err))
        try:
            message = decode(delivery.payload, cls)
        except PayloadTooLarge as err:
            return self._refuse("rejected_too_large", delivery, str(err))
        except ContractError as err:
            return self._refuse("rejected_malformed", delivery, str(err))
        if message.station_id != station:
            why = f"payload names station {message.station_id!r}, the topic {station!r}"
            return self._refuse("rejected_topic_mismatch", delivery, why)
        if not self._registered({station}):
            return self._refuse("rejected_unknown_station", delivery, f"station {station!r} is not registered")
        return message

    def _refuse(self, counter: str, delivery: Delivery, why: str) -> None:
        self._reject(counter, delivery, why)
        delivery.ack()  # retrying cannot make it acceptable

    def _reject(self, counter: str, delivery: Delivery, why: str) -> None:
        self._count(counter)
        preview = delivery.payload[:PREVIEW_CHARS].decode("utf-8", "backslashreplace")
        # One line whatever the payload holds: the reason may quote a hostile key (a newline, an escape code).
        log.warning(
            "refused message on %s (%d bytes): %s | %r", one_line(delivery.topic), len(delivery.payload),
            one_line(why[:PREVIEW_CHARS]), preview,
        )

    # -- handlers -------------------------------------------------------------------
    def _store_entries(self, deliveries: list[Delivery]) -> None:
        accepted = [(d, e) for d in deliveries if (e := self._accept(d, EntryEvent)) is not None]
        if not accepted:
            return
        bad: set[str] = set()
        try:
            new = self._with_db(lambda s: store_events(session=s, events=[e for _, e in accepted]))
        except PERMANENT_ERRORS:
            new, bad = self._store_one_by_one(accepted)
        self._count("stored", len(new))
        self._count("duplicates", len({str(e.event_id) for _, e in accepted} - new - bad) + _repeats(accepted))
        self._tell_stored(accepted, new)
        for delivery, _event in accepted:
            delivery.ack()

    def _store_one_by_one(self, accepted: list[tuple[Delivery, EntryEvent]]) -> tuple[set[str], set[str]]:
        """A batch the database refused for its content: store what it takes, refuse the culprits."""
        new: set[str] = set()
        bad: set[str] = set()
        for delivery, event in accepted:
            try:
                new |= self._with_db(lambda s, e=event: store_events(session=s, events=[e]))
            except PERMANENT_ERRORS as err:
                bad.add(str(event.event_id))
                self._reject("rejected_unstorable", delivery, f"the database refused it: {err.__class__.__name__}")
        return new, bad


def one_line(text: str) -> str:
    """``text`` with every non-printable character escaped (a log line cannot be split or recoloured)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _repeats(accepted: list[tuple[Delivery, EntryEvent]]) -> int:
    """Copies of an event beyond the first within one batch (a redelivery that caught up with its original)."""
    return len(accepted) - len({str(e.event_id) for _, e in accepted})


def topics_match(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard match for the single-level ``+`` filters the server subscribes to."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    return len(f_parts) == len(t_parts) and all(f in ("+", t) for f, t in zip(f_parts, t_parts))
