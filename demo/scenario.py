"""The demo's people and the visits it plays at the camera.

Enrolled people come from face_recognition's example photos plus a few LFW
identities; strangers are LFW people who appear only once in all of LFW and are
never enrolled. Each visit shows a *different* photo from the one enrolled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from core.imaging import camera_frame, load_image

EX = "face_recognition_examples"


@dataclass(frozen=True)
class Person:
    name: str
    photo: str  # relative to the faces folder


@dataclass(frozen=True)
class Visit:
    who: str  # the true person, for the printout
    photo: str
    enrolled_as: str | None  # name they were enrolled under, None for a stranger


ENROLL: tuple[Person, ...] = (
    Person("Barack Obama", f"{EX}/obama/obama.jpg"),
    Person("Joe Biden", f"{EX}/biden/biden.jpg"),
    Person("Kit Harington", f"{EX}/kit_harington/john1.jpeg"),
    Person("Rose Leslie", f"{EX}/rose_leslie/img1.jpg"),
    Person("Alex Lacamoire", f"{EX}/alex_lacamoire/alex_lacamoire1.jpg"),
    Person("Lin-Manuel Miranda", f"{EX}/lin_manuel_miranda/lin-manuel-miranda.png"),
    Person("Bill Clinton", "lfw_dev/Bill_Clinton/Bill_Clinton_0006.jpg"),
    Person("Hu Jintao", "lfw_dev/Hu_Jintao/Hu_Jintao_0002.jpg"),
)

VISITS: tuple[Visit, ...] = (
    Visit("Barack Obama", f"{EX}/obama/obama2.jpg", "Barack Obama"),
    Visit("Adam Freier (stranger)", "lfw_dev_strangers/Adam_Freier/Adam_Freier_0001.jpg", None),
    Visit("Joe Biden", f"{EX}/biden/biden2.jpg", "Joe Biden"),
    Visit("Rose Leslie", f"{EX}/rose_leslie/img2.jpg", "Rose Leslie"),
    Visit("Brett Hawke (stranger)", "lfw_dev_strangers/Brett_Hawke/Brett_Hawke_0001.jpg", None),
    Visit("Kit Harington", f"{EX}/kit_harington/john2.jpeg", "Kit Harington"),
    Visit("Alex Lacamoire", f"{EX}/alex_lacamoire/img1.jpg", "Alex Lacamoire"),
    Visit("Chang Saio-yue (stranger)", "lfw_dev_strangers/Chang_Saio-yue/Chang_Saio-yue_0001.jpg", None),
)

FRAME_W, FRAME_H = 640, 480


EMPTY = np.full((FRAME_H, FRAME_W, 3), 96, dtype=np.uint8)


class PacedScenario:
    """Plays the visits like a camera at ``fps``: each visit shows the person for
    ``face_s`` seconds, then an empty doorway for ``gap_s`` seconds.

    Like a real camera it does not wait for a slow consumer: a frame whose time
    has passed is skipped, so the agent always gets the current picture.
    ``current`` is the index of the visit on screen (None between visits).
    """

    def __init__(self, faces_dir: Path, visits: tuple[Visit, ...] = VISITS, *, fps: float = 15.0,
                 face_s: float = 1.6, gap_s: float = 1.4) -> None:
        self.visits = visits
        self.fps = fps
        self.frames_per_face = max(1, round(face_s * fps))
        self.frames_per_gap = max(1, round(gap_s * fps))
        self._photos = [camera_frame(load_image(faces_dir / v.photo)) for v in visits]
        self.current: int | None = None
        self.started_at: float | None = None

    @property
    def total_frames(self) -> int:
        return len(self.visits) * (self.frames_per_face + self.frames_per_gap) + self.frames_per_gap

    def _frame(self, i: int) -> tuple[int | None, np.ndarray]:
        period = self.frames_per_face + self.frames_per_gap
        visit, offset = divmod(i - self.frames_per_gap, period)
        if i < self.frames_per_gap or offset >= self.frames_per_face or visit >= len(self.visits):
            return None, EMPTY
        return visit, self._photos[visit]

    def visit_at(self, t: float) -> int | None:
        """The visit on screen at monotonic time t (None before the start or between visits)."""
        if self.started_at is None:
            return None
        visit, _ = self._frame(int((t - self.started_at) * self.fps))
        return visit

    def __iter__(self) -> Iterator[np.ndarray]:
        start = self.started_at = time.monotonic()
        last = -1
        while True:
            i = int((time.monotonic() - start) * self.fps)
            if i <= last:
                time.sleep((last + 1) / self.fps - (time.monotonic() - start))
                continue
            if i >= self.total_frames:
                self.current = None
                return
            last = i
            self.current, frame = self._frame(i)
            yield frame
