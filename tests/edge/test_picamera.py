"""The Pi camera module source (picamera2).

picamera2 exists only on Raspberry Pi OS. Off a Pi, the source must say so
clearly; its logic is exercised with a stand-in for the physical camera (a
``picamera2`` module that serves real frames of the Hamilton clip, in
picamera2's "BGR888" layout, which is R, G, B per pixel); on a Pi with a
camera attached, the real camera is read.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.imaging import Capture
from edge.camera import PICAMERA2_MISSING, PiCameraSource, ReopeningSource, open_source, picamera2_available
from edge.config import CameraConfig
from edge.errors import CameraError

CLIP = "videos/face_recognition/short_hamilton_clip.mp4"


class StandInCamera:
    """Plays the clip's frames as picamera2's Picamera2 would; fails after ``fail_after`` captures once."""

    instances: list["StandInCamera"] = []
    frames: list[np.ndarray] = []
    fail_after: int | None = None

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config: dict[str, Any] | None = None
        self.started = self.stopped = self.closed = False
        self.captured = 0
        StandInCamera.instances.append(self)

    def create_video_configuration(self, main: dict[str, Any]) -> dict[str, Any]:
        return {"main": dict(main)}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, stream: str = "main") -> np.ndarray:
        assert stream == "main" and self.started and self.config is not None
        if StandInCamera.fail_after is not None and self.captured >= StandInCamera.fail_after:
            StandInCamera.fail_after = None
            raise RuntimeError("Camera frontend has timed out!")
        frame = StandInCamera.frames[self.captured % len(StandInCamera.frames)]
        self.captured += 1
        return np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])  # XBGR8888-like 4th byte, must be dropped

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, faces: Path) -> type[StandInCamera]:
    cap = Capture(str(faces / CLIP))
    frames = [cap.read() for _ in range(5)]
    cap.release()
    StandInCamera.instances, StandInCamera.frames, StandInCamera.fail_after = [], frames, None
    module = types.ModuleType("picamera2")
    module.Picamera2 = StandInCamera  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return StandInCamera


@pytest.mark.faces
def test_the_pi_camera_delivers_rgb_frames_and_is_released_on_close(stand_in: type[StandInCamera]) -> None:
    source = open_source(CameraConfig(source="picamera", realtime=False))
    assert isinstance(source, ReopeningSource) and source.live
    got = []
    for frame in source:
        got.append(frame)
        if len(got) == 3:
            source.close()
    cam = stand_in.instances[0]
    assert cam.camera_num == 0 and cam.config == {"main": {"size": (640, 480), "format": "BGR888"}}
    assert [f.index for f in got] == [0, 1, 2]
    assert all(np.array_equal(f.rgb, stand_in.frames[i]) and f.rgb.flags.c_contiguous for i, f in enumerate(got))
    assert cam.stopped and cam.closed


@pytest.mark.faces
def test_a_pi_camera_that_times_out_is_reopened_and_reported(
    stand_in: type[StandInCamera], caplog: pytest.LogCaptureFixture
) -> None:
    stand_in.fail_after = 2
    source = ReopeningSource(PiCameraSource(1), min_delay_s=0.01, max_delay_s=0.05)
    got = []
    with caplog.at_level(logging.WARNING, logger="edge.camera"):
        for frame in source:
            got.append(frame)
            if len(got) == 4:
                break
    source.close()
    assert [f.index for f in got] == [0, 1, 2, 3] and source.reopens == 1
    first, second = stand_in.instances
    assert first.camera_num == 1 and first.closed and second.captured == 2
    assert "Pi camera 1 (picamera2) failed (RuntimeError: Camera frontend has timed out!)" in caplog.text


def test_without_picamera2_the_source_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    if picamera2_available():
        pytest.skip("picamera2 is installed here (a Raspberry Pi)")
    with pytest.raises(CameraError) as err:
        open_source(CameraConfig(source="picamera"))
    assert str(err.value) == PICAMERA2_MISSING and "apt install python3-picamera2" in str(err.value)
    with pytest.raises(CameraError, match="picamera2 cannot be imported"):
        next(iter(PiCameraSource()))


def test_the_real_pi_camera_when_there_is_one() -> None:
    if not picamera2_available():
        pytest.skip("not a Raspberry Pi with picamera2 (hardware test)")
    source = PiCameraSource()
    try:
        frame = next(iter(source))
    except CameraError as err:  # pragma: no cover - a Pi without a camera module attached
        pytest.skip(f"no camera module: {err}")
    finally:
        source.close()
    assert frame.rgb.shape == (480, 640, 3) and frame.rgb.dtype == np.uint8
