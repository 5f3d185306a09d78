"""Helpers for the workers, users and audit page tests: enrolled workers, registered stations, MQTT stations.

Workers are enrolled with real dlib templates of shared LFW photos (made once
per test session). ``StationClient`` is a real MQTT client on the test's
mosquitto that receives the server's gallery broadcasts and answers with
SyncAck, as edge/sync.py does. Set WAYSTATION_DOC_SCREENSHOTS=docs/img to also
write the screenshots for docs/admin.md.
"""

from __future__ import annotations

import os
import queue
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core.mqtt import MqttLink, MqttSettings
from core.templates import enroll_photo
from models import topics
from models.encoding import FACE_MODEL_ID
from models.messages import GalleryChange, GalleryChangeMessage, StationStatus, SyncAck, decode, encode
from server import gallery, stations
from server.tables import AuditEvent, Station
from tests.support.browser import WebApp
from tests.support.services import Mosquitto

PHOTOS = ("Bill_Clinton", "Calista_Flockhart", "Alvaro_Uribe", "Brad_Garrett")
SHOTS = os.environ.get("WAYSTATION_DOC_SCREENSHOTS")


def doc_shot(page: Any, name: str) -> None:
    """A screenshot for docs/admin.md, only when asked for (the tests never write into the repository)."""
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


_TEMPLATES: dict[str, np.ndarray] = {}  # made once per test session, shared by the modules that import the fixture


@pytest.fixture
def vectors(faces: Path, face_engine) -> dict[str, np.ndarray]:  # noqa: ANN001
    """One real enrollment template per shared LFW person, made as the enrollment does (core.templates)."""
    for person in PHOTOS:
        if person not in _TEMPLATES:
            _TEMPLATES[person] = enroll_photo(face_engine, sorted((faces / "lfw_dev" / person).glob("*.jpg"))[0]).vector
    return dict(_TEMPLATES)


def enroll(web: WebApp, name: str, vecs: list[np.ndarray], **fields: Any) -> str:
    """A worker enrolled through server.gallery (as the enroll API does); extra columns set afterwards."""
    with web.sessions() as s:
        worker, _change = gallery.enroll_worker(
            session=s, name=name, vectors=vecs, model_id=FACE_MODEL_ID, phone=fields.pop("phone", None)
        )
        for key, value in fields.items():
            setattr(worker, key, value)
        s.commit()
        return worker.worker_id


def register(web: WebApp, *station_ids: str, time_zone: str = "Asia/Shanghai") -> None:
    with web.sessions() as s:
        for sid in station_ids:
            stations.register_station(session=s, station_id=sid, name=sid.replace("-", " ").title())
            s.get(Station, sid).time_zone = time_zone
        s.commit()


def cookie_client(web: WebApp, page: Any) -> tuple[httpx.Client, str]:
    """An HTTP client with the browser's session cookie, and the page's CSRF token."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "ws_session")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    return httpx.Client(base_url=web.url, cookies={"ws_session": token}, trust_env=False), csrf


def audit_rows(web: WebApp, action: str) -> list[AuditEvent]:
    with web.sessions() as s:
        return list(s.query(AuditEvent).filter_by(action=action).order_by(AuditEvent.id))


class StationClient:
    """A station as far as the gallery goes: receives broadcasts, holds versions, sends SyncAck."""

    def __init__(self, broker: Mosquitto, station_id: str, *, auto_ack: bool = True) -> None:
        self.station_id = station_id
        self.auto_ack = auto_ack
        self.changes: queue.Queue[GalleryChange] = queue.Queue()
        self._probe = f"probe:{station_id}".encode()
        self._probed = False
        self.link = MqttLink(MqttSettings(
            host=broker.host, port=broker.port, client_id=f"test-{station_id}-{uuid.uuid4().hex[:6]}", clean_start=True,
        ))

    def __enter__(self) -> StationClient:
        self.link.start()
        assert self.link.wait_connected(10), "the test station could not connect to mosquitto"
        self.link.subscribe(topics.GALLERY_CHANGE, self._on_change, qos=1)
        deadline = time.monotonic() + 10
        while not self._probed:  # our own probe came back: the subscription is live
            assert time.monotonic() < deadline, "the gallery subscription never became active"
            self.link.publish(topics.GALLERY_CHANGE, self._probe)
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def _on_change(self, _topic: str, payload: bytes) -> None:
        if payload.startswith(b"probe:"):
            self._probed = self._probed or payload == self._probe
            return
        change = decode(payload, GalleryChangeMessage).change
        self.changes.put(change)
        if self.auto_ack:
            self.ack(change.version)

    def ack(self, version: int) -> None:
        ack = SyncAck(station_id=self.station_id, version=version)
        self.link.publish(topics.sync_ack(self.station_id), encode(ack))

    def say_online(self, web: WebApp, version: int) -> None:
        """A heartbeat holding ``version``; returns once the server stored it (so it listens to this station)."""
        status = StationStatus(station_id=self.station_id, online=True, gallery_version=version, agent_version="test")
        deadline = time.monotonic() + 15
        while True:
            self.link.publish(topics.status(self.station_id), encode(status))
            time.sleep(0.2)
            with web.sessions() as s:
                if s.get(Station, self.station_id).online:
                    return
            assert time.monotonic() < deadline, "the server never stored the station's heartbeat"

    def next_change(self, timeout: float = 10.0) -> GalleryChange:
        try:
            return self.changes.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.station_id} got no gallery change within {timeout} s") from None


def acked(web: WebApp, station_id: str) -> int:
    with web.sessions() as s:
        return s.get(Station, station_id).gallery_version_acked


def wait_acked(web: WebApp, station_id: str, version: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while acked(web, station_id) < version:
        assert time.monotonic() < deadline, f"{station_id} never confirmed version {version}"
        time.sleep(0.05)
