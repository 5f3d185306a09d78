"""Frame sources: where the agent's frames come from. No cv2 here (core.imaging owns it).

A :class:`FrameSource` is an iterable of :class:`Frame` (index, monotonic
time, RGB array) with ``live`` (a camera that may drop and should be reopened)
and ``close()``. :func:`open_source` picks one from the camera setting:

=====================  ===============================================
``"0"``, ``"1"``       USB camera by device index (live)
``rtsp://...``/http    network stream (live)
``picamera``           Raspberry Pi camera module via picamera2 (live;
                       ``picamera:1`` for the second camera)
an existing folder     images in name order (core.imaging.list_images)
an existing file       a video file (core.imaging.Capture)
=====================  ===============================================

Live sources are wrapped in :class:`ReopeningSource` (reopen with back-off,
logged once per outage, never a crash); with ``realtime`` the result is read
by a :class:`LatestFrameReader` thread so the detector always gets the newest
frame. :class:`IterableSource` feeds frames given by the caller (demo, tests).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from core.imaging import Capture, ImageError, list_images, load_image
from edge.config import CameraConfig
from edge.errors import CameraError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)
_PICAMERA = re.compile(r"^picamera2?(?::(\d))?$", re.IGNORECASE)
PICAMERA2_MISSING = (
    "picamera2 cannot be imported: on Raspberry Pi OS install it with 'apt install python3-picamera2' and create "
    "the virtual environment with --system-site-packages (it is not installable from PyPI off a Pi)"
)
PICAMERA_SIZE = (640, 480)
"""Frame size asked of the Pi camera: a door's faces are 80-200 px at this size, and HOG's cost grows with pixels."""


@dataclass(frozen=True, slots=True)
class Frame:
    index: int
    t: float  # monotonic seconds when the frame was captured (read)
    rgb: np.ndarray


@runtime_checkable
class FrameSource(Protocol):
    live: bool

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class _Pacer:
    """Sleeps so that frames come out at most ``fps`` per second (stop-aware)."""

    def __init__(self, fps: float | None, stop: threading.Event) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.stop = stop
        self._next = 0.0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self._next > now:
            self.stop.wait(self._next - now)
        self._next = max(now, self._next) + self.period


class IterableSource:
    """Frames handed in by the caller: RGB arrays (stamped with ``clock()`` as they are taken) or Frames."""

    live = False

    def __init__(self, frames: Iterable[np.ndarray | Frame], *, fps: float | None = None, clock: Clock = time.monotonic) -> None:
        self._frames = frames
        self._clock = clock
        self._stop = threading.Event()
        self._fps = fps

    def __iter__(self) -> Iterator[Frame]:
        pacer = _Pacer(self._fps, self._stop)
        for i, item in enumerate(self._frames):
            if self._stop.is_set():
                return
            pacer.wait()
            yield item if isinstance(item, Frame) else Frame(i, self._clock(), item)

    def close(self) -> None:
        self._stop.set()


class ImageFolderSource:
    """Images of a folder in name order; paced at ``fps`` only when ``realtime``."""

    live = False

    def __init__(self, folder: Path, *, fps: float, realtime: bool, clock: Clock = time.monotonic) -> None:
        self.folder = folder
        self._fps = fps if realtime else None
        self._clock = clock
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        pacer = _Pacer(self._fps, self._stop)
        index = 0
        for path in list_images(self.folder):
            if self._stop.is_set():
                return
            try:
                rgb = load_image(path)
            except ImageError as err:
                log.warning("camera: skipping %s: %s", path, err)
                continue
            pacer.wait()
            yield Frame(index, self._clock(), rgb)
            index += 1

    def close(self) -> None:
        self._stop.set()


class CaptureSource:
    """A device index, stream URL or video file read through core.imaging.Capture.

    One iteration is one opening: it ends when the capture stops delivering
    (end of file, a dropped camera). A source that cannot be opened raises
    CameraError. Video files are paced at their own fps when ``pace`` is set,
    so a file can stand in for a live camera.
    """

    def __init__(self, source: int | str, *, live: bool, pace: bool = False, fallback_fps: float = 5.0, clock: Clock = time.monotonic) -> None:
        self.source = source
        self.live = live
        self._pace = pace
        self._fallback_fps = fallback_fps
        self._clock = clock
        self._stop = threading.Event()
        self._cap: Capture | None = None

    def describe(self) -> str:
        return f"camera {self.source}" if isinstance(self.source, int) else str(self.source)

    def __iter__(self) -> Iterator[Frame]:
        cap = Capture(self.source)
        self._cap = cap
        try:
            if not cap.opened:
                raise CameraError(f"cannot open {self.describe()}")
            pacer = _Pacer((cap.fps or self._fallback_fps) if self._pace else None, self._stop)
            index = 0
            while not self._stop.is_set():
                rgb = cap.read()
                if rgb is None:
                    return
                pacer.wait()
                yield Frame(index, self._clock(), rgb)
                index += 1
        finally:
            self._cap = None
            cap.release()

    def close(self) -> None:
        self._stop.set()


class PiCameraSource:
    """The Raspberry Pi camera module through picamera2 (live).

    picamera2 is imported when the camera is opened, never when this module
    is: it exists only on Raspberry Pi OS. One iteration is one opening; any
    error ends it (ReopeningSource then reopens with back-off).
    """

    live = True

    def __init__(self, camera: int = 0, *, size: tuple[int, int] = PICAMERA_SIZE, clock: Clock = time.monotonic) -> None:
        self.camera = camera
        self.size = size
        self._clock = clock
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"Pi camera {self.camera} (picamera2)"

    def __iter__(self) -> Iterator[Frame]:
        try:
            from picamera2 import Picamera2
        except ImportError as err:
            raise CameraError(PICAMERA2_MISSING) from err
        cam = Picamera2(self.camera)
        try:
            # libcamera names formats by the word order of a pixel: "BGR888" arrays hold R, G, B
            # per pixel, the RGB that dlib wants ("RGB888" would be B, G, R).
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "BGR888"}))
            cam.start()
            index = 0
            while not self._stop.is_set():
                rgb = np.ascontiguousarray(cam.capture_array("main")[:, :, :3])
                yield Frame(index, self._clock(), rgb)
                index += 1
        finally:
            with contextlib.suppress(Exception):  # a camera that already failed may fail to stop too
                cam.stop()
            with contextlib.suppress(Exception):
                cam.close()

    def close(self) -> None:
        self._stop.set()


def picamera2_available() -> bool:
    """Whether picamera2 can be imported here (on Raspberry Pi OS with python3-picamera2)."""
    if "picamera2" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("picamera2") is not None
    except (ImportError, ValueError):
        return False


class ReopeningSource:
    """Keeps a live source going: when it fails or stops delivering, reopen it with back-off.

    The outage is logged once as a warning (and once more when frames flow
    again), not on every attempt. Frame indices keep counting across reopens.
    """

    live = True

    def __init__(self, inner: FrameSource, *, min_delay_s: float = 0.5, max_delay_s: float = 30.0) -> None:
        self.inner = inner
        self.min_delay_s = min_delay_s
        self.max_delay_s = max(max_delay_s, min_delay_s)
        self._stop = threading.Event()
        self.reopens = 0
        self.failing = False

    def __iter__(self) -> Iterator[Frame]:
        delay = self.min_delay_s
        index = 0
        name = getattr(self.inner, "describe", lambda: repr(self.inner))()
        while not self._stop.is_set():
            problem = "stopped delivering frames"
            try:
                for frame in self.inner:
                    if self.failing:
                        log.warning("camera: %s is delivering frames again", name)
                        self.failing = False
                    delay = self.min_delay_s
                    yield replace(frame, index=index)
                    index += 1
                    if self._stop.is_set():
                        return
            except Exception as err:  # a camera must never take the agent down
                problem = f"failed ({type(err).__name__}: {err})"
            if self._stop.is_set():
                return
            if not self.failing:
                log.warning("camera: %s %s; reopening with back-off up to %g s", name, problem, self.max_delay_s)
                self.failing = True
            else:
                log.debug("camera: %s %s; next attempt in %.1f s", name, problem, delay)
            self.reopens += 1
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_delay_s)

    def close(self) -> None:
        self._stop.set()
        self.inner.close()


class LatestFrameReader:
    """Reads a source on its own thread and hands out only the newest frame.

    Frames that arrive while the consumer is busy are dropped (``dropped``
    counts them), so a slow detector never works on a stale frame and lag
    never grows. Iteration ends when a finite source is exhausted (or on
    close()); an error from the source ends it too, after being logged.
    """

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.live = source.live
        self.dropped = 0
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._done = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            for frame in self.source:
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = frame
                    self._cond.notify_all()
                if self._closed:
                    break
        except Exception:
            log.exception("camera: the frame reader stopped")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
            self._thread.start()
        while True:
            with self._cond:
                while self._latest is None and not self._done and not self._closed:
                    self._cond.wait(0.5)  # a timeout keeps signals and close() responsive
                if self._closed:
                    return
                frame, self._latest = self._latest, None
                if frame is None:
                    return
            yield frame

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.source.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def open_source(camera: CameraConfig, *, clock: Clock = time.monotonic) -> FrameSource:
    """The frame source the camera setting names; CameraError when it cannot exist."""
    spec = camera.source.strip()
    source: FrameSource
    if spec.isdigit():
        source = ReopeningSource(CaptureSource(int(spec), live=True, clock=clock), max_delay_s=camera.reopen_max_s)
    elif _URL.match(spec):
        source = ReopeningSource(CaptureSource(spec, live=True, clock=clock), max_delay_s=camera.reopen_max_s)
    elif (pi := _PICAMERA.match(spec)) is not None:
        if not picamera2_available():
            raise CameraError(PICAMERA2_MISSING)  # permanent: no point retrying
        source = ReopeningSource(PiCameraSource(int(pi.group(1) or 0), clock=clock), max_delay_s=camera.reopen_max_s)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if not list_images(path):
                raise CameraError(f"camera source {path} is a folder without images (.jpg, .png, .bmp, .webp)")
            source = ImageFolderSource(path, fps=camera.fps, realtime=camera.realtime, clock=clock)
        elif path.is_file():
            probe = Capture(str(path))
            ok = probe.opened
            probe.release()
            if not ok:
                raise CameraError(f"camera source {path} is not a video file that can be read")
            source = CaptureSource(str(path), live=False, pace=camera.realtime, fallback_fps=camera.fps, clock=clock)
        else:
            raise CameraError(
                f"camera source {spec!r} does not exist: use a camera index such as \"0\", an existing video file "
                "or image folder, an rtsp:// or http(s):// URL, or picamera (the Pi camera module)"
            )
    if camera.realtime:
        return LatestFrameReader(source)
    return source
