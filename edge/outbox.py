"""Drains the durable outbox to the broker: at least once, never dropped before a PUBACK.

One thread. It wakes when an event is enqueued, when the broker acknowledges
one, on (re)connect and once a second as a safety net, never busy-polling. At
most ``max_in_flight`` events are published and unacknowledged at a time. An
event leaves the SQLite outbox only in ``mark_delivered``, after its PUBACK;
after a disconnect, or when no PUBACK came within ``ack_timeout_s``, unacked
events are published again. The server deduplicates on ``event_id``, so a
duplicate costs nothing and a lost event is impossible.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import partial

from core.mqtt import MqttLink
from edge.store import EdgeStore

log = logging.getLogger(__name__)


class OutboxDrainer:
    def __init__(
        self, store: EdgeStore, link: MqttLink, *, max_in_flight: int = 50, ack_timeout_s: float = 30.0
    ) -> None:
        self.store = store
        self.link = link
        self.max_in_flight = max_in_flight
        self.ack_timeout_s = ack_timeout_s
        self.published = 0
        self.delivered = 0
        self.resent = 0
        self._in_flight: dict[str, float] = {}  # event_id -> monotonic time published
        self._acked: deque[str] = deque()  # filled on paho's thread, drained here
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reset = threading.Event()
        self._thread: threading.Thread | None = None

    # -- called from other threads ---------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def connection_lost(self) -> None:
        """Whatever was in flight will never be acknowledged: publish it again after reconnecting."""
        self._reset.set()
        self._wake.set()

    def _on_ack(self, event_id: str) -> None:  # paho's thread: hand off only
        self._acked.append(event_id)
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-drainer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait (while connected) until every queued event is acknowledged; True if the outbox is empty."""
        deadline = time.monotonic() + timeout
        while self.store.depth() > 0:
            if not self.link.connected or time.monotonic() >= deadline or self._thread is None:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._settle()  # acks that arrived at the last moment still count

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._step()
            except Exception:  # a database hiccup must not end delivery for good
                log.exception("outbox: delivery step failed; retrying")
                self._stop.wait(1.0)

    def _settle(self) -> None:
        done: list[str] = []
        while self._acked:
            done.append(self._acked.popleft())
        if not done:
            return
        for event_id in done:
            self._in_flight.pop(event_id, None)
        removed = self.store.mark_delivered(*done)
        self.delivered += removed

    def _step(self) -> None:
        if self._reset.is_set():
            self._reset.clear()
            if self._in_flight:
                log.info("outbox: connection lost with %d event(s) unacknowledged; they will be sent again", len(self._in_flight))
                self.resent += len(self._in_flight)
            self._in_flight.clear()
        self._settle()
        if not self.link.connected:
            return
        now = time.monotonic()
        stale = [e for e, t in self._in_flight.items() if now - t > self.ack_timeout_s]
        if stale:
            log.warning("outbox: no acknowledgement for %d event(s) after %.0f s; sending again", len(stale), self.ack_timeout_s)
            self.resent += len(stale)
            for event_id in stale:
                del self._in_flight[event_id]
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        for event_id, topic, payload in self.store.pending(limit=len(self._in_flight) + room):
            if room <= 0 or self._stop.is_set():
                break
            if event_id in self._in_flight:
                continue
            self._in_flight[event_id] = time.monotonic()
            if not self.link.publish(topic, payload, qos=1, on_acked=partial(self._on_ack, event_id)):
                del self._in_flight[event_id]
                break  # not connected any more: the reconnect wakes us
            self.published += 1
            room -= 1
