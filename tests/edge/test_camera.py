"""Frame sources on real photos and a real clip; the only fake is a camera that drops (fed real frames)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from core.imaging import load_image
from edge.camera import (
    CaptureSource,
    Frame,
    FrameSource,
    ImageFolderSource,
    IterableSource,
    LatestFrameReader,
    ReopeningSource,
    open_source,
)
from edge.config import CameraConfig
from edge.errors import CameraError

pytestmark = pytest.mark.faces

CLIP = "videos/face_recognition/short_hamilton_clip.mp4"
PHOTOS = {
    "02_biden.jpg": "face_recognition_examples/biden/biden.jpg",
    "01_obama.jpg": "face_recognition_examples/obama/obama.jpg",
    "10_small.jpg": "face_recognition_examples/obama/obama_small.jpg",
    "03_obama2.jpg": "face_recognition_examples/obama/obama2.jpg",
}


@pytest.fixture
def photo_folder(tmp_path: Path, faces: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, rel in PHOTOS.items():
        (folder / name).symlink_to(faces / rel)
    (folder / "notes.txt").write_text("not an image")
    (folder / "05_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def test_image_folder_yields_the_photos_in_name_order(photo_folder: Path, faces: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = open_source(CameraConfig(source=str(photo_folder), realtime=False))
    assert isinstance(source, ImageFolderSource) and not source.live
    with caplog.at_level(logging.WARNING, logger="edge.camera"):
        frames = list(source)
    expected = [PHOTOS[n] for n in sorted(PHOTOS)]
    assert [f.index for f in frames] == list(range(len(expected)))
    for frame, rel in zip(frames, expected):
        assert np.array_equal(frame.rgb, load_image(faces / rel))  # EXIF-upright RGB, same pixels
    assert all(b.t >= a.t for a, b in zip(frames, frames[1:]))
    assert "05_broken.jpg" in caplog.text  # skipped, and said so


def test_image_folder_is_paced_only_when_realtime(photo_folder: Path) -> None:
    paced = list(ImageFolderSource(photo_folder, fps=5.0, realtime=True))
    gaps = [b.t - a.t for a, b in zip(paced, paced[1:])]
    assert len(paced) == 4 and min(gaps) >= 0.19


def test_video_file_yields_every_frame_in_order(faces: Path) -> None:
    source = open_source(CameraConfig(source=str(faces / CLIP), realtime=False))
    assert isinstance(source, CaptureSource) and not source.live
    count, shapes, indices = 0, set(), []
    for frame in source:
        count += 1
        shapes.add(frame.rgb.shape)
        indices.append(frame.index)
    assert count == 275 and shapes == {(360, 640, 3)}
    assert indices == list(range(275))


def test_realtime_reader_hands_out_the_newest_frame_and_drops_stale_ones(faces: Path) -> None:
    source = open_source(CameraConfig(source=str(faces / CLIP), realtime=True))
    assert isinstance(source, LatestFrameReader)
    seen = []
    started = time.monotonic()
    for frame in source:
        seen.append(frame.index)
        time.sleep(0.2)  # a detector slower than the camera
        if time.monotonic() - started > 1.5:
            break
    source.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert max(b - a for a, b in zip(seen, seen[1:])) >= 3  # ~6 frames arrive per 0.2 s at 30 fps
    assert source.dropped > 0
    assert 20 <= seen[-1] <= 80  # paced at the clip's 29.97 fps, not decoded as fast as possible


def test_realtime_reader_on_a_finite_source_ends(photo_folder: Path) -> None:
    reader = LatestFrameReader(ImageFolderSource(photo_folder, fps=50.0, realtime=True))
    frames = list(reader)  # a fast consumer: every frame, then the end
    assert [f.index for f in frames] == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", ["missing/folder/or/file.mp4", "rtsp-looking-but-not-a-url"])
def test_a_missing_source_is_reported_clearly(bad: str, tmp_path: Path) -> None:
    with pytest.raises(CameraError) as err:
        open_source(CameraConfig(source=str(tmp_path / bad)))
    assert "does not exist" in str(err.value) and "rtsp://" in str(err.value)


def test_a_file_that_is_not_a_video_is_reported(tmp_path: Path) -> None:
    text = tmp_path / "clip.mp4"
    text.write_text("this is not a video")
    with pytest.raises(CameraError, match="not a video file"):
        open_source(CameraConfig(source=str(text)))


def test_an_empty_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="without images"):
        open_source(CameraConfig(source=str(tmp_path)))


def test_device_indices_and_urls_become_live_reopening_sources() -> None:
    for spec in ("0", "rtsp://127.0.0.1:1/stream", "http://127.0.0.1:1/cam.mjpg"):
        source = open_source(CameraConfig(source=spec, realtime=False))
        assert isinstance(source, ReopeningSource) and source.live
        source.close()


class DroppingCamera:
    """A USB camera that delivers, drops (error), refuses to open once, then delivers again: real frames."""

    live = True

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.openings = 0
        self.closed = False

    def __iter__(self) -> Iterator[Frame]:
        self.openings += 1
        if self.openings == 1:
            for i, rgb in enumerate(self.frames[:3]):
                yield Frame(i, time.monotonic(), rgb)
            raise OSError("VIDIOC_DQBUF: No such device")
        if self.openings == 2:
            raise CameraError("cannot open camera 0")
        for i, rgb in enumerate(self.frames[3:]):
            yield Frame(i, time.monotonic(), rgb)
        # then it stops delivering (returns): reopened again, and refused forever after
        if self.openings > 3:
            raise CameraError("cannot open camera 0")

    def close(self) -> None:
        self.closed = True


def test_a_camera_that_drops_is_reopened_with_back_off_and_reported_once(
    photo_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rgbs = [f.rgb for f in ImageFolderSource(photo_folder, fps=1, realtime=False)] * 2
    camera = DroppingCamera(rgbs[:5])
    source = ReopeningSource(camera, min_delay_s=0.01, max_delay_s=0.05)
    got: list[Frame] = []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.camera"):
        for frame in source:
            got.append(frame)
            if len(got) == 5:
                break
        assert [f.index for f in got] == [0, 1, 2, 3, 4]  # indices keep counting across reopens
        assert np.array_equal(got[3].rgb, rgbs[3])
        assert camera.openings == 3 and source.reopens == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the outage once, the recovery once: not every attempt
    assert "No such device" in warnings[0].getMessage() and "again" in warnings[1].getMessage()
    source.close()
    assert camera.closed


def test_a_camera_that_never_opens_never_crashes_the_reader(caplog: pytest.LogCaptureFixture) -> None:
    source = LatestFrameReader(ReopeningSource(CaptureSource(99, live=True), min_delay_s=0.05, max_delay_s=0.1))
    got: list[Frame] = []

    def consume() -> None:
        got.extend(source)

    with caplog.at_level(logging.WARNING, logger="edge.camera"):
        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.6)
        assert t.is_alive()  # still waiting for the camera, not crashed
        source.close()
        t.join(5)
    assert not t.is_alive() and got == []
    assert "cannot open camera 99" in caplog.text
    assert sum("cannot open" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1


def test_iterable_source_stamps_arrays_and_keeps_given_frames() -> None:
    ticks = iter([5.0, 6.0])
    rgb = np.zeros((4, 4, 3), np.uint8)
    given = Frame(7, 1.5, rgb)
    source = IterableSource([rgb, given, rgb], clock=lambda: next(ticks))
    assert isinstance(source, FrameSource)
    frames = list(source)
    assert [(f.index, f.t) for f in frames] == [(0, 5.0), (7, 1.5), (2, 6.0)]


def test_iterable_source_paces_at_fps_and_stops_on_close() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    source = IterableSource((rgb for _ in range(1000)), fps=20)
    got = []
    for frame in source:
        got.append(frame)
        if len(got) == 5:
            source.close()
    assert len(got) == 5
    assert got[-1].t - got[0].t >= 4 * 0.05 - 0.01
