"""The first real path, every hop real (issue 2, item 5):

photo -> face_recognition encoding (exactly one face) -> server database ->
MQTT (versioned enrollment message) -> the edge's persisted enrollment cache ->
frames -> detection, encoding, 1:N matching -> relay pulse and beep on gpiozero
mock pins -> entry event in the edge's durable outbox -> MQTT -> server
database -> GET /api/entries.

Run once against Debian's mosquitto (a real process) and once against the
embedded amqtt broker.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from core.broker import free_port
from demo.scenario import EX, PacedScenario, Visit
from edge.agent import EdgeAgent
from edge.config import EdgeSettings
from edge.store import EdgeStore
from server.config import ServerSettings
from server.runtime import ServerRuntime

pytestmark = [pytest.mark.faces, pytest.mark.models, pytest.mark.broker]

STATION = "e2e-door"
RELAY_PIN = 17


def _enroll(api: httpx.Client, photo: Path, name: str) -> dict:
    with open(photo, "rb") as fh:
        r = api.post("/api/workers", data={"name": name}, files={"photos": (photo.name, fh.read())})
    assert r.status_code == 201, r.text
    return r.json()


def _entries(api: httpx.Client) -> list[dict]:
    return api.get("/api/entries", params={"limit": 1000}).raise_for_status().json()["items"]


def test_photo_to_open_door_to_audited_entry(
    any_broker: tuple[str, int], faces: Path, face_engine, tmp_path: Path  # noqa: ANN001
) -> None:
    host, port = any_broker
    token = secrets.token_urlsafe(24)
    settings = ServerSettings.load(
        None, data_dir=tmp_path / "server", http_port=free_port(), api_token=token, mqtt_host=host, mqtt_port=port
    )
    with ServerRuntime(settings, face_engine=face_engine) as server, httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        api.post("/api/stations", json={"station_id": STATION, "name": "End-to-end test door"}).raise_for_status()
        obama = _enroll(api, faces / EX / "obama/obama.jpg", "Barack Obama")
        biden = _enroll(api, faces / EX / "biden/biden.jpg", "Joe Biden")
        assert biden["version"] > obama["version"]

        edge_settings = EdgeSettings.build(
            station_id=STATION,
            data_dir=tmp_path / "edge",
            mqtt={"host": host, "port": port},
            policy={"visit_gap_s": 0.8},
            # The visitors are still photos, which liveness rightly rejects as spoofs: off here,
            # this test is about the path from photo to audited entry (tests/edge/test_gate.py
            # and test_replay.py cover the door with liveness on).
            liveness={"mode": "off"},
        )
        visits = (
            Visit("Barack Obama", f"{EX}/obama/obama2.jpg", "Barack Obama"),
            Visit("a stranger", "lfw_dev_strangers/Adam_Freier/Adam_Freier_0001.jpg", None),
        )
        # 2.4 s in front of the camera: on a loaded 2-core runner a stranger still gets the k frames
        # an "unknown" needs (at 1.6 s one run under heavy load decided nothing for the stranger).
        scenario = PacedScenario(faces, visits, fps=12, face_s=2.4, gap_s=1.2)
        factory = MockFactory()
        verdicts = []
        agent = EdgeAgent(
            edge_settings, frames=scenario, pin_factory=factory, engine=face_engine,
            on_verdict=lambda v, ms: verdicts.append((v, ms)),
        )
        agent.start()
        try:
            assert agent.wait_for_gallery(min_size=2, timeout=20), "enrollments did not reach the station over MQTT"
            relay = factory.pin(RELAY_PIN)
            assert relay.state == 0, "the relay must be off before anyone is let in"
            agent.run()

            # The door: exactly one grant, for Obama, and the relay pulsed once.
            granted = [v for v, _ in verdicts if v.decision.value == "granted"]
            denied = [v for v, _ in verdicts if v.decision.value == "denied"]
            assert [v.identity for v in granted] == [obama["worker_id"]]
            assert len(denied) == 1 and denied[0].identity is None
            latency = next(ms for v, ms in verdicts if v.decision.value == "granted")
            assert latency is not None and 0 < latency < 3000
            assert any(s.state for s in relay.states), "the relay never switched on"

            # The server: both entries arrive, each once, read back over HTTP.
            deadline = time.monotonic() + 15
            items = _entries(api)
            while len(items) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                items = _entries(api)
            assert sorted(i["decision"] for i in items) == ["denied", "granted"]
            grant = next(i for i in items if i["decision"] == "granted")
            assert grant["worker_id"] == obama["worker_id"] and grant["worker_name"] == "Barack Obama"
            assert grant["station_id"] == STATION and grant["distance"] < 0.5
            assert agent.outbox_depth == 0
        finally:
            agent.stop()
        assert factory.pin(RELAY_PIN).state == 0, "the relay must be off after the agent stops"

    # The station's enrollment cache survived on disk.
    store = EdgeStore.open(tmp_path / "edge")
    try:
        gallery = store.load_gallery()
        assert set(gallery.identities) == {obama["worker_id"], biden["worker_id"]}
        assert store.gallery_version() >= biden["version"]
    finally:
        store.close()
