"""The station's /metrics and /healthz: a real agent (real dlib models, real photos, gpiozero mock pins,
a real mosquitto) scraped over real HTTP on 127.0.0.1, with a stand-in camera fed real frames."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from prometheus_client.parser import text_string_to_metric_families

from edge.agent import EdgeAgent
from edge.camera import Frame
from edge.config import EdgeSettings
from edge.store import EdgeStore
from tests.edge.server_side import upsert
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]


class FeedCamera:
    """The physical camera's stand-in: delivers the frames the test feeds, when it feeds them."""

    live = True

    def __init__(self) -> None:
        self._frames: queue.Queue[tuple[float, np.ndarray]] = queue.Queue()
        self._closed = threading.Event()

    def feed(self, frames: list[np.ndarray], fps: float = 10.0) -> None:
        for rgb in frames:
            self._frames.put((time.monotonic(), rgb))  # stamped when "captured", as a camera does
            time.sleep(1.0 / fps)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self._closed.is_set():
            try:
                t, rgb = self._frames.get(timeout=0.1)
            except queue.Empty:
                continue
            yield Frame(index, t, rgb)
            index += 1

    def close(self) -> None:
        self._closed.set()


def settings_for(broker: Mosquitto, data_dir: Path, **health: object) -> EdgeSettings:
    # Still photos are rightly refused by liveness: off here (tests/edge/test_gate.py covers it).
    return EdgeSettings.build(
        station_id="st-health", data_dir=data_dir, mqtt={"host": broker.host, "port": broker.port},
        door={"unlock_s": 1.0}, liveness={"mode": "off"}, health={"port": 0, **health},
    )


def scrape(agent: EdgeAgent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert agent.health_http is not None and agent.health_http.host == "127.0.0.1"
    r = httpx.get(f"http://127.0.0.1:{agent.health_http.port}/metrics", timeout=10, trust_env=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def healthz(agent: EdgeAgent) -> httpx.Response:
    assert agent.health_http is not None
    return httpx.get(f"http://127.0.0.1:{agent.health_http.port}/healthz", timeout=10, trust_env=False)


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def metric(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))


def test_metrics_and_healthz_follow_the_door_the_camera_and_the_outbox(
    mosquitto: Mosquitto, face_engine, photos, tmp_path: Path  # noqa: ANN001
) -> None:
    data_dir = tmp_path / "edge"
    store = EdgeStore.open(data_dir)
    store.apply_changes([upsert(3, "obama", face_engine.encode_single(photos["obama"])[0])], snapshot=False,
                        latest_version=3)
    store.close()
    mosquitto.stop()  # entries must wait in the outbox

    camera = FeedCamera()
    agent = EdgeAgent(settings_for(mosquitto, data_dir, stale_after_s=2.0), frames=camera,
                      pin_factory=MockFactory(), engine=face_engine)
    with agent:
        loop = threading.Thread(target=agent.run, daemon=True)
        loop.start()
        first = healthz(agent)
        assert first.status_code == 503 and first.json()["camera"] == "starting"
        start = scrape(agent)
        assert metric(start, "waystation_edge_frames_analysed_total") == 0
        assert metric(start, "waystation_edge_decisions_total", decision="granted", kind="face") == 0
        assert metric(start, "waystation_edge_gallery_version") == 3
        assert metric(start, "waystation_edge_mqtt_connected") == 0
        assert metric(start, "waystation_edge_info", station="st-health", version=start_version(start)) == 1

        # Obama steps up (granted), nobody for 2 s, then Biden, who is not enrolled (denied).
        blank = np.full((480, 640, 3), 90, np.uint8)
        camera.feed([photos["obama2"]] * 5 + [blank] * 20 + [photos["biden"]] * 8)
        wait_for(lambda: agent.counts["frames"] == 33, 60, "the frames to be processed")
        assert agent.counts["denied"] == 1
        camera.feed([blank])  # a fresh frame: the camera is up
        wait_for(lambda: agent.counts["frames"] == 34, 10, "the fresh frame")
        ok = healthz(agent)
        assert ok.status_code == 200, ok.text
        assert ok.json()["camera"] == "ok" and ok.json()["mqtt"] == "disconnected" and ok.json()["outbox_depth"] == 2
        seen = scrape(agent)
        assert metric(seen, "waystation_edge_decisions_total", decision="granted", kind="face") == 1
        assert metric(seen, "waystation_edge_decisions_total", decision="denied", kind="face") == 1
        assert metric(seen, "waystation_edge_decisions_total", decision="spoof", kind="face") == 0
        assert metric(seen, "waystation_edge_frames_analysed_total") == 34
        assert metric(seen, "waystation_edge_frames_read_total") == 34  # analysed, or dropped as stale (none here)
        assert metric(seen, "waystation_edge_pipeline_steps_total", step="encodings") >= 2
        assert metric(seen, "waystation_edge_outbox_depth") == 2  # both entries wait: the broker is down
        assert metric(seen, "waystation_edge_camera_up") == 1
        assert 0 <= metric(seen, "waystation_edge_last_frame_age_seconds") < 1.0

        # The camera stops delivering: /healthz turns 503 once no frame came for stale_after_s.
        wait_for(lambda: healthz(agent).status_code == 503, 5, "/healthz to report the stalled camera")
        stalled = healthz(agent).json()
        assert stalled["camera"] == "stalled" and "no frame for" in stalled["problem"]
        assert metric(scrape(agent), "waystation_edge_camera_up") == 0

        # The broker comes back: the outbox drains, and the metrics say so.
        mosquitto.start()
        wait_for(lambda: metric(scrape(agent), "waystation_edge_outbox_depth") == 0, 45, "the outbox to drain")
        assert metric(scrape(agent), "waystation_edge_mqtt_connected") == 1
        camera.feed([blank] * 3)
        wait_for(lambda: healthz(agent).status_code == 200, 5, "/healthz to recover with frames")
    loop.join(10)


def start_version(samples: dict) -> str:  # type: ignore[type-arg]
    return next(dict(labels)["version"] for (name, labels) in samples if name == "waystation_edge_info")


def test_a_taken_port_leaves_the_door_working(
    mosquitto: Mosquitto, face_engine, photos, tmp_path: Path, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = EdgeAgent(settings_for(mosquitto, tmp_path / "edge", port=port), frames=[photos["biden"]] * 2,
                          pin_factory=MockFactory(), engine=face_engine)
        with agent:
            assert agent.health_http is None
            assert agent.run() == 2
    assert any("health and metrics listener not started" in r.getMessage() for r in caplog.records)


def test_the_listener_can_be_switched_off(mosquitto: Mosquitto, face_engine, tmp_path: Path) -> None:  # noqa: ANN001
    agent = EdgeAgent(settings_for(mosquitto, tmp_path / "edge", enabled=False), frames=[],
                      pin_factory=MockFactory(), engine=face_engine)
    with agent:
        assert agent.health_http is None
        # The metrics still exist in the process (e.g. for a test or a future push), just not served.
        assert b"waystation_edge_frames_analysed_total 0.0" in agent.metrics.render(None)[0]
