"""Enroll the protocol's workers, then show every probe photo at the door, through the door's own code.

- **Enrollment** is real enrollment's: ``core.templates.enroll_photo``, one
  template per photo. A worker with several enroll rows gets one template per
  photo, as the server keeps one per uploaded photo (the nearest counts); as
  the server does, a worker with any unusable photo is not enrolled at all.
  Beside it, the library examples' enrollment (the photo's own encoding of its
  largest face) is kept as the reference for the DET plot.
- **A probe** is a still photo on a 640x480 camera frame, filling it as a
  person at the door does (``core.imaging.camera_frame``), shown for the
  ``policy.frames_required`` frames a grant needs at the camera's frame rate,
  through ``edge.pipeline.run_frame`` (search, tracking, encoding, 1:N match)
  and ``edge.gate.DoorGate`` (the decision policy) on an injected clock.
  Liveness is off: a still photo must fail it (measured in docs/liveness.md).
  Each probe is a fresh visit at a freshly started door, so the order of the
  rows changes nothing.

The encodings the door computed are recorded (the gallery remembers each
query), so thresholds can be swept afterwards without running the models again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.faces import FaceEngine, FaceError
from core.imaging import ImageError, camera_frame, fit_within, load_image
from core.matcher import Gallery, Match
from core.templates import MAX_SIDE, UPSAMPLE, enroll_photo
from edge.config import EdgeSettings
from edge.evaluate.protocol import Protocol
from edge.policy import DecisionPolicy, Observation, PolicyConfig

log = logging.getLogger(__name__)

Frames = list[tuple[int, np.ndarray | None]]
"""Per frame shown: (face size in pixels, the door's encoding of the face or None). A frame on which
the door followed the face without encoding it again (edge/gate.py decides) carries the face's
latest encoding: a still photo shows the same face, and that is what a sweep must replay."""

Progress = Callable[[str, int, int], None]


class _RecordingGallery(Gallery):
    """The door's gallery, remembering every query the pipeline matches (the probe's encodings)."""

    __slots__ = ("queries",)

    def __init__(self, entries: Sequence[tuple[str, np.ndarray]]) -> None:
        super().__init__(entries)
        self.queries: list[np.ndarray] = []

    def match(self, query: np.ndarray) -> Match:
        self.queries.append(np.array(query, dtype=np.float32, copy=True))
        return super().match(query)


@dataclass
class Probe:
    role: str  # probe_genuine or probe_impostor
    identity: str
    photo: Path
    frames: Frames = field(default_factory=list)
    granted: str | None = None  # the worker the door let in, if any

    @property
    def no_face(self) -> bool:
        """No face found on any frame (a face found but too small to match is not 'no face')."""
        return all(px == 0 for px, _ in self.frames)


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


@dataclass
class Evaluation:
    settings: EdgeSettings
    n_enroll_rows: int
    enrolled: list[tuple[str, np.ndarray]]  # (identity, template), one per photo
    reference: list[tuple[str, np.ndarray]]  # (identity, the photo's own encoding): the library's enrollment
    failed: dict[str, str]  # identity -> why its enrollment was refused
    probes: list[Probe]

    @property
    def n_gallery(self) -> int:
        return len({i for i, _ in self.enrolled})

    def of(self, role: str) -> list[Probe]:
        return [p for p in self.probes if p.role == role]

    def summary(self) -> dict[str, float | int | None]:
        """Issue 3's JSON object: far and frr as fractions (null without such probes), the rest counts."""
        gen, imp = self.of("probe_genuine"), self.of("probe_impostor")
        return {
            "far": _rate(sum(p.granted is not None for p in imp), len(imp)),
            "frr": _rate(sum(p.granted != p.identity for p in gen), len(gen)),
            "misidentified": sum(p.granted not in (None, p.identity) for p in gen),
            "failed_to_enroll": len(self.failed),
            "n_gallery": self.n_gallery,
            "n_genuine": len(gen),
            "n_impostor": len(imp),
        }


def plain_encoding(engine: FaceEngine, photo: Path) -> np.ndarray | None:
    """The library examples' enrollment: the photo's own encoding (largest face); None without a face."""
    try:
        image, _ = fit_within(load_image(photo), MAX_SIDE)
    except ImageError:
        return None
    boxes = engine.detect(image, upsample=UPSAMPLE)
    if not boxes:
        return None
    return engine.encode(image, [max(boxes, key=lambda b: b.size)])[0]


def observations(frames: Frames, gallery: Gallery) -> list[Observation | None]:
    """The policy's view of recorded frames against a gallery (matching is the only costly part)."""
    return [None if vec is None else Observation(px, gallery.match(vec)) for px, vec in frames]


def replay(config: PolicyConfig, seen: Sequence[Observation | None], fps: float) -> str | None:
    """The decision policy over recorded observations, one per frame: the worker granted, or None."""
    now = [0.0]
    policy = DecisionPolicy(config, clock=lambda: now[0])
    for i, obs in enumerate(seen):
        now[0] = i / fps
        verdict = policy.observe(obs)
        if verdict is not None and verdict.open_door:
            return verdict.identity
    return None


def show_at_door(engine: FaceEngine, settings: EdgeSettings, gallery: _RecordingGallery,
                 frame: np.ndarray) -> tuple[Frames, str | None]:
    """A still frame shown for the k frames the policy needs, through the door's own path."""
    from edge.gallery import GalleryHolder
    from edge.gate import DoorGate
    from edge.pipeline import FramePipeline, run_frame

    now = [0.0]
    gate = DoorGate(settings.policy, settings.liveness.model_copy(update={"mode": "off"}), clock=lambda: now[0])
    pipeline = FramePipeline(engine, settings.detection, GalleryHolder(gallery))
    frames: Frames = []
    granted = None
    for i in range(settings.policy.frames_required):
        now[0] = i / settings.camera.fps
        before = len(gallery.queries)
        verdict = run_frame(pipeline, gate, frame, now[0])
        box = pipeline.last_box
        if box is None:
            frames.append((0, None))
        elif len(gallery.queries) > before:
            frames.append((box.size, gallery.queries[-1]))
        else:  # followed without encoding it again (the gate's choice): a still shows the same face
            frames.append((box.size, frames[-1][1] if frames else None))
        if verdict is not None and verdict.open_door and granted is None:
            granted = verdict.identity
    return frames, granted


def evaluate(protocol: Protocol, settings: EdgeSettings, engine: FaceEngine,
             progress: Progress | None = None) -> Evaluation:
    """Enroll, then show every probe at the door (see the module docstring)."""
    say = progress or (lambda *_: None)
    per_worker: dict[str, list[np.ndarray]] = {}
    failed: dict[str, str] = {}
    reference: list[tuple[str, np.ndarray]] = []
    for n, (identity, photo) in enumerate(protocol.enroll, start=1):
        try:
            per_worker.setdefault(identity, []).append(enroll_photo(engine, photo).vector)
        except (ImageError, FaceError) as err:
            failed.setdefault(identity, f"{photo.name}: {err}")
        plain = plain_encoding(engine, photo)
        if plain is not None:
            reference.append((identity, plain))
        say("enrolling", n, len(protocol.enroll))
    enrolled = [(i, v) for i, vecs in per_worker.items() if i not in failed for v in vecs]
    gallery = _RecordingGallery(enrolled)
    probes = [Probe("probe_genuine", i, p) for i, p in protocol.genuine]
    probes += [Probe("probe_impostor", i, p) for i, p in protocol.impostor]
    for n, probe in enumerate(probes, start=1):
        try:
            frame = camera_frame(load_image(probe.photo))
        except ImageError as err:
            log.warning("probe %s cannot be read (%s): counted as showing no face", probe.photo, err)
            probe.frames = [(0, None)] * settings.policy.frames_required
        else:
            probe.frames, probe.granted = show_at_door(engine, settings, gallery, frame)
        say("probes at the door", n, len(probes))
    fps = settings.camera.fps
    if [replay(settings.policy, observations(p.frames, gallery), fps) for p in probes] != [p.granted for p in probes]:
        # The sweep replays recorded frames through the policy alone; say so if that is not the door.
        log.warning("replaying the recorded frames does not reproduce the door's decisions: the sweep is approximate")
    return Evaluation(settings, len(protocol.enroll), enrolled, reference, failed, probes)
