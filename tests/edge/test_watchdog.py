"""The systemd watchdog, with a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET.

A real agent (real models, mock pins) says READY=1 once started, WATCHDOG=1 about every
WATCHDOG_USEC / 2 while frames come, nothing once the camera's read hangs (so systemd would
kill and restart it), and STOPPING=1 on the way out.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from core.broker import free_port
from edge.agent import EdgeAgent
from edge.camera import Frame
from edge.config import EdgeSettings
from edge.watchdog import Watchdog

pytestmark = [pytest.mark.models]


class Systemd:
    """The receiving end of NOTIFY_SOCKET: collects each datagram with the time it arrived."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, state: str) -> list[float]:
        return [t for t, m in self.messages if m == state]

    def wait(self, state: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not self.times(state):
            assert time.monotonic() < deadline, f"no {state} within {timeout} s: got {self.messages}"
            time.sleep(0.02)
        return self.times(state)[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    path = str(tmp_path / "notify")
    assert len(path) < 100, "AF_UNIX paths are limited to 107 bytes"
    receiver = Systemd(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2: a ping about every second
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield receiver
    receiver.close()


class Camera:
    """A camera at 10 fps whose read can be made to hang, as a wedged V4L2/libcamera read does."""

    live = True

    def __init__(self) -> None:
        self.hang = threading.Event()
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        rgb = np.full((240, 320, 3), 90, np.uint8)
        while not self._closed.is_set():
            if self.hang.is_set():
                self._closed.wait()  # the read never returns (until the agent is stopped)
                return
            time.sleep(0.1)
            yield Frame(index, time.monotonic(), rgb)
            index += 1

    def close(self) -> None:
        self._closed.set()


def test_ready_then_pings_while_frames_come_none_once_the_camera_hangs_then_stopping(
    systemd: Systemd, face_engine, tmp_path: Path  # noqa: ANN001
) -> None:
    settings = EdgeSettings.build(
        station_id="st-watchdog", data_dir=tmp_path / "edge", mqtt={"host": "127.0.0.1", "port": free_port()},  # no broker
        liveness={"mode": "off"}, health={"enabled": False},
    )
    camera = Camera()
    agent = EdgeAgent(settings, frames=camera, pin_factory=MockFactory(), engine=face_engine)
    agent.start()
    try:
        ready_at = systemd.wait("READY=1", 5)
        assert systemd.times("WATCHDOG=1") == []  # nothing before the loop runs
        loop = threading.Thread(target=agent.run, daemon=True)
        loop.start()
        time.sleep(3.6)
        pings = systemd.times("WATCHDOG=1")
        assert 2 <= len(pings) <= 4, pings  # about every second (half of WatchdogSec=2)
        gaps = np.diff([ready_at, *pings])
        assert all(0.9 <= g <= 1.6 for g in gaps), gaps

        camera.hang.set()  # the frame source hangs: the loop makes no progress
        time.sleep(0.5)  # a ping already due may still go out with the last frame
        hung_at = time.monotonic()
        time.sleep(3.0)  # longer than WatchdogSec: systemd would have killed the agent
        assert [t for t in systemd.times("WATCHDOG=1") if t > hung_at] == []
        assert systemd.times("STOPPING=1") == []
    finally:
        agent.stop()
    systemd.wait("STOPPING=1", 5)
    loop.join(5)
    assert [m for _, m in systemd.messages if m != "WATCHDOG=1"] == ["READY=1", "STOPPING=1"]


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    dog = Watchdog()
    assert not dog.enabled and dog.interval_s is None
    assert dog.notify("READY=1") is False
    dog.ready()
    dog.frame_done()
    assert dog.pings == 0


def test_abstract_socket_and_another_process_watchdog(tmp_path: Path) -> None:
    """'@name' is Linux's abstract namespace; WATCHDOG_PID of another process switches the pings off."""
    name = f"waystation-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(2)
        dog = Watchdog({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
        assert dog.enabled and dog.interval_s is None  # the watchdog is systemd's for PID 1, not us
        assert dog.notify("READY=1")
        assert receiver.recv(100) == b"READY=1"
        dog.frame_done()
        with pytest.raises(TimeoutError):
            receiver.settimeout(0.3)
            receiver.recv(100)


def test_a_vanished_socket_never_reaches_the_frame_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = [0.0]
    dog = Watchdog({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000000"}, clock=lambda: t[0])
    dog.ready()
    for _ in range(5):
        t[0] += 1.0
        dog.frame_done()  # no exception: the door keeps working
    assert dog.pings == 0
    assert sum("cannot notify systemd" in r.getMessage() for r in caplog.records) == 1  # logged once
