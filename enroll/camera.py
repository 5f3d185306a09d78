"""Enrollment from a camera, or a video file standing in for one, with live feedback.

Every frame is checked here with core.quality (the checks the server runs
again on each sample) and the first problem is shown on one terminal line,
rewritten in place ("move closer", "too dark", ...). A frame is **taken** when
it passes, comes at least ``min_gap_s`` after the previous sample, and is not
the same picture as a sample already taken (a frozen camera repeats its last
frame). A taken frame is uploaded at once (enroll/capture.py): the server
checks it again, makes its template and says whether the face is already
enrolled. Samples must show one person: one too far from the first (someone
else stepped in) starts the collection again.

A video file is played at its own speed, dropping frames while a frame is
being checked, as a live camera would (and from the start again when it
ends): the time from camera start to a saved enrollment
(bench/enroll_time.py) is then what staff would see.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np

from core.faces import Box, FaceEngine
from core.i18n import Translator
from core.imaging import Capture, encode_jpeg, resize, to_gray
from core.quality import QualityReport, QualitySettings, assess, prepare
from enroll.capture import EnrollmentApi, Sample
from enroll.messages import problem_message

SAME_PERSON = 0.6
"""A sample farther than this from the first one is another person (dlib's same-person distance)."""

MIN_CHANGE = 0.05
"""Smallest mean difference (in standard deviations) between two samples' normalised face crops:
below it the frames are the same picture. Consecutive frames of a person holding still differ by ~0.1."""

JPEG_QUALITY = 95
Clock = Callable[[], float]


class CameraError(Exception):
    """The camera or video cannot be opened; the message says which and what to check."""


def open_frames(
    source: int | Path, t: Translator, *, loop: bool = True, clock: Clock = time.monotonic
) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds since the camera started, RGB frame). A video file is paced to its frame rate and, with
    ``loop``, played again from the start when it ends (a camera does not end; the caller's timeout does)."""
    capture = Capture(source if isinstance(source, int) else str(source))
    if not capture.opened:
        capture.release()
        if isinstance(source, int):
            raise CameraError(t.gettext("camera %(device)s cannot be opened: is it connected, and not used by "
                                        "another program?", device=source))
        raise CameraError(t.gettext("the video %(path)s cannot be opened", path=str(source)))
    if isinstance(source, int):
        return _frames(capture, None, clock=clock)
    return _frames(capture, (lambda: Capture(str(source))) if loop else None, paced=True, clock=clock)


def _frames(
    capture: Capture, reopen: Callable[[], Capture] | None, *, paced: bool = False, clock: Clock
) -> Iterator[tuple[float, np.ndarray]]:
    fps = capture.fps or 25.0
    start = segment = clock()
    index = -1
    try:
        while True:
            rgb = capture.read()
            if rgb is None:
                if reopen is None or index < 0:
                    return
                capture.release()
                capture, segment, index = reopen(), clock(), -1
                continue
            index += 1
            if paced:
                behind = (clock() - segment) - index / fps
                if behind < 0:
                    time.sleep(-behind)
                elif behind > 1.0 / fps:
                    continue  # this frame's moment passed while the last one was checked: a camera drops it
            yield clock() - start, rgb
    finally:
        capture.release()


class StatusLine:
    """One line rewritten in place on a terminal; elsewhere (a log, a test) a new line per change."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""

    def show(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""


@dataclass
class Collection:
    """What :func:`collect` gathered: accepted samples, frames looked at, seconds from camera start to the
    last frame looked at, and of those the seconds spent waiting for the server's verdicts."""

    samples: list[Sample] = field(default_factory=list)
    frames: int = 0
    elapsed_s: float = 0.0
    server_s: float = 0.0
    restarts: int = 0


def signature(image: np.ndarray, box: Box) -> np.ndarray:
    """The face crop as 32x32 grey, zero mean and unit variance (tells two pictures of a face apart)."""
    crop = to_gray(np.ascontiguousarray(image[box.top : box.bottom, box.left : box.right]))
    small = resize(crop, 32.0 / max(crop.shape[:2])).astype(np.float32)
    padded = np.zeros((32, 32), np.float32)
    padded[: small.shape[0], : small.shape[1]] = small[:32, :32]
    return (padded - padded.mean()) / (padded.std() + 1e-6)


def collect(
    frames: Iterator[tuple[float, np.ndarray]],
    engine: FaceEngine,
    api: EnrollmentApi,
    t: Translator,
    *,
    count: int = 3,
    min_gap_s: float = 0.6,
    timeout_s: float = 60.0,
    line: StatusLine | None = None,
    settings: QualitySettings | None = None,
) -> Collection:
    """Take ``count`` good, varied samples of one person (fewer when the frames end or time runs out)."""
    line = line or StatusLine()
    out = Collection()
    signatures: list[np.ndarray] = []
    last_taken = -math.inf
    for ts, rgb in frames:
        out.frames += 1
        out.elapsed_s = ts
        if ts > timeout_s:
            break
        image = prepare(rgb)
        report = assess(engine, image, settings)
        progress = t.gettext("[%(have)s/%(want)s]", have=len(out.samples), want=count)
        if not report.ok:
            line.show(f"{progress} {_advice(report, t)}")
            continue
        assert report.box is not None
        sig = signature(image, report.box)
        if ts - last_taken < min_gap_s or any(float(np.abs(sig - s).mean()) < MIN_CHANGE for s in signatures):
            line.show(progress + " " + t.gettext("Good. Hold still..."))
            continue
        line.show(progress + " " + t.gettext("Checking the sample on the server..."))
        asked = time.monotonic()
        sample = api.sample(encode_jpeg(image, JPEG_QUALITY), f"frame-{out.frames:05d}.jpg")
        out.server_s += time.monotonic() - asked
        if not sample.ok:
            line.show(f"{progress} {'; '.join(sample.problems)}")
            continue
        if out.samples and _distance(sample, out.samples[0]) > SAME_PERSON:
            out.samples, signatures = [], []
            out.restarts += 1
            line.show(t.gettext("Another person came into view: starting again with only the worker in front of "
                                "the camera."))
        out.samples.append(sample)
        signatures.append(sig)
        last_taken = ts
        if len(out.samples) >= count:
            line.show(t.gettext("[%(have)s/%(want)s] Done.", have=len(out.samples), want=count))
            break
    line.done()
    return out


def _advice(report: QualityReport, t: Translator) -> str:
    """The first problem as a sentence for the worker and staff (the rest follow once it is fixed)."""
    return problem_message(report.problems[0], t)


def _distance(a: Sample, b: Sample) -> float:
    return float(np.linalg.norm(a.vector() - b.vector()))
