"""A worker enrolled at a session is let in at every station within seconds (issue 6, item 6).

Every hop is real: the enrollment API on a real server (SQLite file, uvicorn)
judges the worker's real photos and saves them with consent; the gallery
change goes over Debian's mosquitto to TWO edge agents, each with its own
enrollment cache on disk and its own gpiozero MockFactory pins; both cameras
(fakes fed real frames of the worker, a different photo from the enrolled
ones) show the worker standing at the door from before the enrollment on.
Both doors stay shut while the worker is unknown and both relays pulse within
seconds of the enrollment; both entries reach the server.

The two agents' frames are processed on one thread, one agent after the
other, and the photos are judged by the server before the cameras start:
dlib's detector, shared by everything in this process, is not safe to call
from two threads at once (on the real system the server and each station are
separate machines).
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from core.broker import free_port
from core.i18n import translator
from core.imaging import camera_frame, load_image
from edge.agent import EdgeAgent
from edge.camera import Frame
from edge.config import EdgeSettings
from enroll.capture import Consent, EnrollmentApi, WorkerFields
from server.config import ServerSettings
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.faces, pytest.mark.models, pytest.mark.broker]

EX = "face_recognition_examples"
STATIONS = ("rest-north", "rest-south")
RELAY_PIN = 17
ENROLL_PHOTOS = ("obama/obama.jpg", "obama/obama-720p.jpg", "obama/obama_partial_face2.jpg")
AT_THE_DOOR = "obama/obama2.jpg"  # not one of the enrolled photos
WITHIN_S = 15.0  # "within seconds", with room for a loaded 2-core CI machine (the measured figures are printed)


class Station:
    """One edge agent with its own data folder and mock pins, and what its door did."""

    def __init__(self, station_id: str, tmp_path: Path, broker: Mosquitto, engine) -> None:  # noqa: ANN001
        self.station_id = station_id
        self.factory = MockFactory()
        self.verdicts: list[tuple[float, str, str | None]] = []  # (monotonic time, decision, worker id)
        settings = EdgeSettings.build(
            station_id=station_id,
            data_dir=tmp_path / station_id,
            mqtt={"host": broker.host, "port": broker.port},
            # One thread serves both doors (see the module docstring), so each sees half the frame rate, and
            # a loaded CI machine halves it again: a wider window for the agreeing frames keeps the test about
            # propagation, not CPU speed (tests/edge cover the policy's own timing).
            policy={"visit_gap_s": 5.0, "window_s": 10.0, "deny_after_frames": 3},
            door={"unlock_s": 1.0},
            # A photo held to a camera is rightly a spoof for the liveness check: off here, this test is
            # about the path from enrollment to every door (tests/edge cover liveness).
            liveness={"mode": "off"},
        )
        self.agent = EdgeAgent(settings, frames=[], pin_factory=self.factory, engine=engine,
                               on_verdict=self._on_verdict)

    def _on_verdict(self, verdict, _latency_ms) -> None:  # noqa: ANN001
        self.verdicts.append((time.monotonic(), verdict.decision.value, verdict.identity))

    def first(self, decision: str, after: float = 0.0) -> tuple[float, str | None] | None:
        return next(((t, who) for t, d, who in self.verdicts if d == decision and t >= after), None)

    @property
    def relay(self):  # noqa: ANN201
        return self.factory.pin(RELAY_PIN)

    def holds(self, worker_id: str) -> bool:
        return worker_id in self.agent.holder.gallery.identities


class Doorways:
    """Both cameras: the same real frame of the worker, offered to each agent in turn on one thread."""

    def __init__(self, stations: list[Station], rgb) -> None:  # noqa: ANN001
        self.stations = stations
        self.rgb = rgb
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="doorways", daemon=True)

    def _run(self) -> None:
        index = 0
        try:
            while not self.stop.is_set():
                for station in self.stations:
                    station.agent.process_frame(Frame(index, time.monotonic(), self.rgb))
                index += 1
                self.stop.wait(0.03)
        except BaseException as err:  # noqa: BLE001  (reported by the test)
            self.error = err

    def __enter__(self) -> "Doorways":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _wait(condition, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def test_worker_enrolled_once_is_let_in_at_both_stations_within_seconds(
    faces: Path, face_engine, mosquitto: Mosquitto, tmp_path: Path  # noqa: ANN001
) -> None:
    token = secrets.token_urlsafe(24)
    settings = ServerSettings.load(
        None, data_dir=tmp_path / "server", http_port=free_port(), api_token=token,
        mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
    )
    with ServerRuntime(settings, face_engine=face_engine) as server, \
            EnrollmentApi(server.url, token, translator("en")) as api, \
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as admin:
        for sid in STATIONS:
            admin.post("/api/stations", json={"station_id": sid, "name": sid}).raise_for_status()
        # At the enrollment desk: the server judges the worker's photos (before any camera runs, see above).
        samples = [api.sample((faces / EX / p).read_bytes(), Path(p).name) for p in ENROLL_PHOTOS]
        assert all(s.ok for s in samples), [(s.label, s.problems) for s in samples]
        assert not any(s.duplicate for s in samples), "nobody is enrolled yet"

        stations = [Station(sid, tmp_path, mosquitto, face_engine) for sid in STATIONS]
        for st in stations:
            st.agent.start()
        try:
            for st in stations:
                assert st.agent.sync is not None and st.agent.sync.link.wait_connected(15), "station not connected"
            with Doorways(stations, camera_frame(load_image(faces / EX / AT_THE_DOOR))) as doorways:
                # The worker stands at both doors: unknown, both stay shut.
                assert _wait(lambda: all(st.first("denied") for st in stations), 30), [s.verdicts for s in stations]
                assert all(st.first("granted") is None for st in stations)
                assert all(st.relay.state == 0 for st in stations), "a door opened for an unknown face"

                fields = WorkerFields(name="Barack Obama", phone="13800138000", category="courier",
                                      employer="Union courier co-op")
                sent = time.monotonic()
                saved = api.enroll(fields, Consent("2026-1"), samples)
                enrolled = time.monotonic()
                worker_id = saved["worker_id"]

                held: dict[str, float] = {}
                opened: dict[str, float] = {}

                def progress() -> bool:
                    now = time.monotonic()
                    for st in stations:
                        if st.station_id not in held and st.holds(worker_id):
                            held[st.station_id] = now
                        grant = st.first("granted", after=sent)
                        if grant is not None:
                            opened[st.station_id] = grant[0]
                    return len(held) == len(opened) == len(stations)

                _wait(progress, WITHIN_S + 5)
                assert doorways.error is None, doorways.error
            for sid in STATIONS:
                hold_s = held.get(sid, float("inf")) - enrolled
                open_s = opened.get(sid, float("inf")) - enrolled
                print(f"\n{sid}: holds the worker {hold_s:.3f} s and opened the door {open_s:.3f} s after the "
                      f"enrollment was saved (save request took {enrolled - sent:.3f} s)")
            assert set(held) == set(STATIONS), f"enrollment did not reach every station: {held}"
            assert set(opened) == set(STATIONS), f"not every door opened: {[s.verdicts for s in stations]}"
            assert max(held.values()) - enrolled < WITHIN_S
            assert max(opened.values()) - enrolled < WITHIN_S
            for st in stations:
                grant = st.first("granted", after=sent)
                assert grant is not None and grant[1] == worker_id, "the door opened for someone else"
                # The relay pulsed: switched on by the grant and off again after unlock_s.
                on = [s for s in st.relay.states if s.state]
                assert on, f"{st.station_id}: the relay never switched on"
                assert _wait(lambda st=st: st.relay.state == 0, 5), f"{st.station_id}: the relay stayed on"

            # Both entries reached the server, each from its own station, for the enrolled worker.
            def granted_at() -> set[str]:
                items = admin.get("/api/entries", params={"limit": 100}).raise_for_status().json()["items"]
                return {i["station_id"] for i in items if i["decision"] == "granted" and i["worker_id"] == worker_id}

            assert _wait(lambda: granted_at() == set(STATIONS), 15), granted_at()
        finally:
            for st in stations:
                st.agent.stop()
