"""The server's side of the MQTT contract, played by a test over a real broker.

It keeps a change log, answers SyncRequests from it (paged, optionally as a
snapshot), broadcasts live changes, and records every SyncAck, status and
entry event it receives.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import numpy as np

from core.mqtt import MqttLink, MqttSettings
from models import topics
from models.encoding import FaceEncoding
from models.messages import (
    EntryEvent,
    GalleryChange,
    GalleryChangeMessage,
    GalleryOp,
    StationStatus,
    SyncAck,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)


def upsert(version: int, worker: str, *vectors: np.ndarray, name: str = "", active: bool = True) -> GalleryChange:
    if not vectors:
        rng = np.random.default_rng(abs(hash((worker, version))) % 2**32)
        vectors = (rng.normal(size=128).astype(np.float32) * 0.05,)
    return GalleryChange(
        version=version, op=GalleryOp.UPSERT, worker_id=worker, display_name=name or worker.title(),
        encodings=tuple(FaceEncoding.from_vector(v) for v in vectors), active=active,
    )


def delete(version: int, worker: str) -> GalleryChange:
    return GalleryChange(version=version, op=GalleryOp.DELETE, worker_id=worker)


class ServerSide:
    def __init__(self, host: str, port: int, *, auto_answer: bool = True, page_size: int = 200) -> None:
        self.log: dict[int, GalleryChange] = {}
        self.auto_answer = auto_answer
        self.page_size = page_size
        self.snapshot_next = False
        self.requests: list[SyncRequest] = []
        self.acks: list[SyncAck] = []
        self.statuses: list[StationStatus] = []
        self.entries: list[EntryEvent] = []
        self._cond = threading.Condition()
        # A persistent session, as the real server keeps: the broker holds the entries published
        # while this client is away (e.g. when it reconnects after the station did).
        self.link = MqttLink(MqttSettings(host=host, port=port, client_id=f"test-server-{uuid.uuid4().hex[:8]}", clean_start=False))
        self.link.subscribe(topics.ALL_SYNC_REQUESTS, self._on_request)
        self.link.subscribe(topics.ALL_SYNC_ACKS, self._record(SyncAck, self.acks))
        self.link.subscribe(topics.ALL_STATUS, self._record(StationStatus, self.statuses))
        self.link.subscribe(topics.ALL_ENTRIES, self._record(EntryEvent, self.entries))

    def __enter__(self) -> "ServerSide":
        self.link.start()
        assert self.link.wait_connected(10), "the test server could not connect to the broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    # -- recording ------------------------------------------------------------------
    def _record(self, cls: type, into: list) -> Callable[[str, bytes], None]:
        def handler(_topic: str, payload: bytes) -> None:
            msg = decode(payload, cls)
            with self._cond:
                into.append(msg)
                self._cond.notify_all()
        return handler

    def wait(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    # -- acting as the server -------------------------------------------------------------
    def add(self, *changes: GalleryChange) -> None:
        for c in changes:
            self.log[c.version] = c

    def broadcast(self, change: GalleryChange) -> None:
        self.add(change)
        assert self.link.publish(topics.GALLERY_CHANGE, encode(GalleryChangeMessage(change=change)))

    @property
    def latest(self) -> int:
        return max(self.log, default=0)

    def _on_request(self, _topic: str, payload: bytes) -> None:
        request = decode(payload, SyncRequest)
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        if self.auto_answer:
            self.answer(request)

    def replies(self, request: SyncRequest) -> list[SyncReply]:
        """The pages answering a request: changes after its version, or a snapshot of the current workers."""
        snapshot = self.snapshot_next
        if snapshot:
            latest_by_worker: dict[str, GalleryChange] = {}
            for v in sorted(self.log):
                latest_by_worker[self.log[v].worker_id] = self.log[v]
            changes = [c for c in latest_by_worker.values() if c.op == GalleryOp.UPSERT]
        else:
            changes = [self.log[v] for v in sorted(self.log) if v > request.since_version]
        pages = [changes[i : i + self.page_size] for i in range(0, len(changes), self.page_size)] or [[]]
        return [
            SyncReply(
                request_id=request.request_id, snapshot=snapshot, page=n, changes=tuple(page),
                more=n < len(pages) - 1, latest_version=self.latest,
            )
            for n, page in enumerate(pages)
        ]

    def answer(self, request: SyncRequest, *, pages: list[int] | None = None) -> None:
        """Publish the reply pages (all, or only those numbered in ``pages``, in that order)."""
        replies = self.replies(request)
        for n in range(len(replies)) if pages is None else pages:
            assert self.link.publish(topics.sync_reply(request.station_id), encode(replies[n]))
            time.sleep(0.01)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        assert self.link.publish(topic, payload)
