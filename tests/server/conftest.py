"""Fixtures for the server tests: a real ServerRuntime (SQLite file, uvicorn, mosquitto) and MQTT clients."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine

from core.broker import free_port
from core.mqtt import MqttLink, MqttSettings
from models import topics
from models.encoding import FACE_MODEL_ID, FaceEncoding
from models.messages import StationStatus, encode
from server.config import ServerSettings
from server.db import make_engine, upgrade_database
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto, postgres_url  # noqa: F401  (postgres_url: a fixture)

TOKEN = "test-token-0123456789abcdef"
STATION = "s1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL database (a file may define its own)."""
    sqlite = f"sqlite:///{tmp_path / 'server.db'}"
    url = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = make_engine(url)
    upgrade_database(db)
    try:
        yield db
    finally:
        db.dispose()


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_settings(tmp_path: Path, broker: Mosquitto, **overrides: object) -> ServerSettings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "api_token": TOKEN,
        "http_port": free_port(),
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "mqtt_client_id": f"waystation-server-{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, mosquitto: Mosquitto) -> ServerSettings:
    return make_settings(tmp_path, mosquitto)


def start_server(settings: ServerSettings, mosquitto: Mosquitto, **kwargs: object) -> ServerRuntime:
    runtime = ServerRuntime(settings, **kwargs).start()  # type: ignore[arg-type]
    assert runtime.ingest is not None and runtime.ingest.wait_connected(10), "server did not connect to mosquitto"
    wait_subscribed(runtime, mosquitto)
    return runtime


def wait_subscribed(runtime: ServerRuntime, broker: Mosquitto) -> None:
    """Make sure the server's subscriptions are active: a probe from an unknown station gets refused."""
    assert runtime.ingest is not None
    before = runtime.ingest.counters["rejected_unknown_station"]
    with mqtt_link(broker) as link:
        probe = encode(StationStatus(station_id="zz-probe", online=True))
        deadline = time.monotonic() + 10
        while runtime.ingest.counters["rejected_unknown_station"] == before:
            assert time.monotonic() < deadline, "the server never received a message"
            link.publish(topics.status("zz-probe"), probe)
            time.sleep(0.1)


@pytest.fixture
def server(settings: ServerSettings, mosquitto: Mosquitto) -> Iterator[ServerRuntime]:
    runtime = start_server(settings, mosquitto)
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def api(server: ServerRuntime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        yield client


@pytest.fixture
def station(api: httpx.Client) -> str:
    """A registered station id."""
    api.post("/api/stations", json={"station_id": STATION, "name": "Rest stop 1"}).raise_for_status()
    return STATION


class mqtt_link:  # noqa: N801  (used like a function: `with mqtt_link(broker) as link`)
    """A connected MqttLink playing a station or an observer; clean session, random id."""

    def __init__(self, broker: Mosquitto) -> None:
        client_id = f"test-{uuid.uuid4().hex[:10]}"
        self.link = MqttLink(MqttSettings(host=broker.host, port=broker.port, client_id=client_id, clean_start=True))

    def __enter__(self) -> MqttLink:
        self.link.start()
        assert self.link.wait_connected(10), "test client could not connect to mosquitto"
        return self.link

    def __exit__(self, *exc: object) -> None:
        self.link.stop()


def publish_acked(link: MqttLink, messages: list[tuple[str, bytes]], timeout: float = 20.0) -> None:
    """Publish QoS 1 and wait for every PUBACK (paho drops unsent messages when a client stops)."""
    acked = threading.Semaphore(0)
    for topic, payload in messages:
        assert link.publish(topic, payload, on_acked=acked.release), f"publish to {topic} failed"
    deadline = time.monotonic() + timeout
    for _ in messages:
        assert acked.acquire(timeout=max(0.0, deadline - time.monotonic())), "broker did not acknowledge"


class Inbox:
    """Collects the messages published on one topic, once its subscription is known to be active."""

    PROBE = b"inbox-probe"

    def __init__(self, link: MqttLink, topic: str) -> None:
        self.messages: queue.Queue[bytes] = queue.Queue()
        self._probed = False
        link.subscribe(topic, self._on_message, qos=1)
        deadline = time.monotonic() + 10
        while not self._probed:  # our own probe comes back: the subscription is live
            assert time.monotonic() < deadline, f"subscription to {topic} never became active"
            link.publish(topic, self.PROBE)
            time.sleep(0.05)

    def _on_message(self, _topic: str, payload: bytes) -> None:
        if payload == self.PROBE:
            self._probed = True
        else:
            self.messages.put(payload)

    def get(self, timeout: float = 10.0) -> bytes:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def assert_empty(self, wait: float = 0.5) -> None:
        time.sleep(wait)
        assert self.messages.empty(), "unexpected message"


def random_encodings(rng: np.random.Generator, n: int = 1) -> list[dict[str, str]]:
    """Encodings as the enrollment CLI sends them: unit-ish random 128-d vectors."""
    out = []
    for _ in range(n):
        vec = rng.normal(size=128).astype(np.float32)
        vec /= np.linalg.norm(vec) * 2.0
        out.append(FaceEncoding.from_vector(vec, model=FACE_MODEL_ID).model_dump())
    return out
