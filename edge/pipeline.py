"""One frame in, at most one observation out: detect small, keep the largest big-enough face, encode it, match it.

Detection runs on a copy shrunk by ``detection.scale`` (boxes come back in
full-frame pixels); faces smaller than ``detection.min_face_px`` are never
encoded, and only the largest remaining face is: the person at the door, not
someone crossing the street behind them. With an empty gallery nothing is
encoded at all (there is nobody to match), but the face still counts as seen.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from core.faces import Box, FaceEngine
from core.matcher import NO_MATCH, Gallery
from edge.config import DetectionConfig
from edge.gallery import GalleryHolder
from edge.policy import Observation

log = logging.getLogger(__name__)


class FramePipeline:
    def __init__(self, engine: FaceEngine, settings: DetectionConfig, gallery: GalleryHolder | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.holder = gallery or GalleryHolder()
        self.last_box: Box | None = None
        self.last_ms: float = 0.0
        self.encodings_computed = 0

    def process(self, rgb: np.ndarray, gallery: Gallery | None = None) -> Observation | None:
        """The observation for the largest usable face of the frame, or None when there is none."""
        started = time.perf_counter()
        try:
            s = self.settings
            boxes = self.engine.detect(rgb, scale=s.scale, upsample=s.upsample)
            usable = [b for b in boxes if b.size >= s.min_face_px]
            if not usable:
                self.last_box = None
                return None
            box = max(usable, key=lambda b: b.size)
            self.last_box = box
            current = gallery if gallery is not None else self.holder.gallery
            if len(current) == 0:
                return Observation(face_px=box.size, match=NO_MATCH)
            vector = self.engine.encode(rgb, [box])[0]
            self.encodings_computed += 1
            return Observation(face_px=box.size, match=current.match(vector))
        finally:
            self.last_ms = (time.perf_counter() - started) * 1000.0
