"""Replay a recorded clip or an image folder through the door path: ``python -m edge replay``.

Installers use it to tune a station on its own footage. It runs exactly the
agent's frame path (edge.pipeline.run_frame: pipeline, policy, liveness,
gate) with the shipped settings (or a settings file), against a gallery
folder of ``<identity>/<photo>`` files, and yields one decision per door
verdict. No broker, pins or database are involved.

Every frame is processed, none dropped, and the clock is the clip's own:
frame *i* is at ``i / fps`` seconds (a video's own frame rate; for an image
folder, ``--fps``). So a replay gives the same decisions on any machine, fast
or slow; ``t_ms`` is measured from the person's first usable frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from core.faces import FaceEngine, FaceError
from core.imaging import Capture, ImageError, list_images
from core.matcher import Gallery
from core.templates import enroll_photo
from edge.camera import open_source
from edge.config import CameraConfig, EdgeSettings
from edge.errors import CameraError
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.pipeline import FramePipeline, run_frame
from edge.policy import Verdict

log = logging.getLogger(__name__)


@dataclass
class GalleryBuild:
    """The gallery made from a folder, and the photos that could not be used (with the reason)."""

    gallery: Gallery
    photos: int = 0
    refused: list[tuple[Path, str]] = field(default_factory=list)


def build_gallery(engine: FaceEngine, folder: Path) -> GalleryBuild:
    """Enroll every ``<identity>/<photo>`` under ``folder`` as the server does (core.templates: one
    template per photo, which must show exactly one face).

    Photos that cannot be used are listed in ``refused``, not raised; a
    missing folder raises FileNotFoundError.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"gallery folder {folder} does not exist")
    entries = []
    refused: list[tuple[Path, str]] = []
    photos = 0
    for path in sorted(folder.iterdir()):
        if path.is_file():
            if path.name.startswith("."):
                continue
            refused.append((path, "not inside an <identity>/ folder"))
            continue
        if not path.is_dir():
            continue
        for photo in list_images(path):
            photos += 1
            try:
                template = enroll_photo(engine, photo)  # exactly as the server enrolls a photo
            except (ImageError, FaceError) as err:
                refused.append((photo, str(err)))
                continue
            entries.append((path.name, template.vector))
    return GalleryBuild(Gallery(entries, version=1), photos, refused)


@dataclass(frozen=True, slots=True)
class ReplayDecision:
    identity: str | None
    decision: str
    reason: str
    t_ms: float

    def as_dict(self) -> dict[str, object]:
        return {"identity": self.identity, "decision": self.decision, "reason": self.reason, "t_ms": self.t_ms}

    @classmethod
    def of(cls, verdict: Verdict) -> "ReplayDecision":
        return cls(verdict.identity, verdict.decision.value, verdict.reason, round(verdict.elapsed_s * 1000.0, 1))


def clip_fps(source: Path, fallback: float) -> float:
    """A video file's own frame rate; ``fallback`` for an image folder or a file without one."""
    if source.is_dir():
        return fallback
    cap = Capture(str(source))
    try:
        return cap.fps or fallback
    finally:
        cap.release()


class Replay:
    """The agent's frame path on a finite source, timed by the clip's frame times."""

    def __init__(self, settings: EdgeSettings, engine: FaceEngine, gallery: Gallery) -> None:
        self.settings = settings
        self.engine = engine
        self.pipeline = FramePipeline(engine, settings.detection, GalleryHolder(gallery))
        self._t = 0.0
        self.gate = DoorGate(settings.policy, settings.liveness, clock=lambda: self._t)
        self.frames = 0

    def run(self, source: Path, fps: float) -> Iterator[ReplayDecision]:
        """Decisions in the order they happen; raises CameraError when the source cannot be read."""
        if not (source.is_dir() or source.is_file()):
            raise CameraError(f"{source} is neither a video file nor an image folder")
        # An absolute path: a folder named "0" is a folder here, not USB camera 0.
        frames = open_source(CameraConfig(source=str(source.resolve()), realtime=False))
        if frames.live:  # pragma: no cover - a file or folder never is; guards a future source type
            raise CameraError(f"{source} is a live camera; replay needs a recording")
        try:
            for frame in frames:
                verdict = self.step(frame.rgb, frame.index / fps)
                if verdict is not None:
                    yield ReplayDecision.of(verdict)
        finally:
            frames.close()

    def step(self, rgb: np.ndarray, t: float) -> Verdict | None:
        """One frame at clip time ``t`` (seconds) through the door path."""
        self._t = t
        self.frames += 1
        return run_frame(self.pipeline, self.gate, rgb, t)
