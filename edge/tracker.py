"""Which face to follow and where to look for it next: pure geometry on boxes and thumbnails, no models.

The frame pipeline detects faces with HOG, whose cost grows with the pixels
searched. Most frames at a door either show nobody or show the same person
as the frame before, so the pipeline asks this module where to look:

- :class:`FaceTracker` follows one face, the person at the door (the
  largest usable face), from frame to frame by box overlap (IoU) or centre
  distance. While the face was confirmed on the previous frame, the next
  frame is searched only in a *region* around it (``roi_margin`` face sizes
  on each side), shrunk so that the face is about ``roi_face_px`` pixels:
  a 640x480 frame becomes a ~250x250 crop. Every ``rescan_s`` the whole
  frame is looked at again (:meth:`FaceTracker.rescan_due`), so someone
  stepping in front (a larger face) is noticed; a larger face replaces the
  followed one only when it is clearly larger (``SWITCH_RATIO``,
  :meth:`FaceTracker.takes_over`), so two people of similar size do not make
  the tracker flap between them. Since only such a face matters then, the
  pipeline searches at the scale that just finds it (edge/pipeline.py).
- :class:`MotionGate` lets the pipeline skip the whole-frame search while
  nobody is followed and nothing in the picture has changed since the last
  search that found no face: an empty doorway costs a thumbnail comparison,
  not a detector pass. It also reports scene cuts (most of the picture
  changed), after which a region search would be meaningless.

Neither decides anything about identities: encoding and the door decision
are the pipeline's and the gate's business (see edge/pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from core.faces import Box
from edge.policy import Observation

SWITCH_RATIO = 1.25
"""A face found by a whole-frame search replaces the followed one only when this much larger."""

_LOST_AFTER_S = 0.5
"""A followed face not seen for this long is forgotten (a new face then starts a new track)."""

_MIN_IOU = 0.3
_MAX_CENTRE_JUMP = 0.5  # face sizes between consecutive sightings


@dataclass(frozen=True, slots=True)
class FaceFrame:
    """What the pipeline saw of the followed face on one frame (None for the frame when there is none).

    ``observation`` is the policy's Observation (face size and 1:N match)
    when the face was encoded on this frame, or matched against an empty
    gallery; None when the face was followed but not encoded. ``landmarks``
    are the 68 points (face_recognition's dict) when they were asked for.
    """

    box: Box
    track_id: int
    new_track: bool
    observation: Observation | None
    landmarks: Mapping[str, Sequence[tuple[int, int]]] | None
    frame_size: tuple[int, int]  # (height, width)
    eye_landmarks: np.ndarray | None = None  # a small face's 68 points measured on an upscaled crop (liveness blinks)

    @property
    def face_px(self) -> int:
        return self.box.size


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    top, bottom = max(a.top, b.top), min(a.bottom, b.bottom)
    left, right = max(a.left, b.left), min(a.right, b.right)
    if bottom <= top or right <= left:
        return 0.0
    inter = float((bottom - top) * (right - left))
    union = float(a.height * a.width + b.height * b.width) - inter
    return inter / union if union > 0 else 0.0


def same_face(a: Box, b: Box) -> bool:
    """Whether box ``b`` is plausibly the face ``a`` one frame later."""
    if iou(a, b) >= _MIN_IOU:
        return True
    (x0, y0), (x1, y1) = a.center, b.center
    size = max(a.size, 1)
    return float(np.hypot(x1 - x0, y1 - y0)) <= _MAX_CENTRE_JUMP * size and abs(b.size - a.size) <= 0.5 * size


def expand(box: Box, margin: float, height: int, width: int) -> Box:
    """The box grown by ``margin`` face sizes on every side, clipped to the frame."""
    m = int(round(margin * max(box.size, 1)))
    return Box(box.top - m, box.right + m, box.bottom + m, box.left - m).clipped(height, width)


@dataclass
class _Track:
    track_id: int
    box: Box
    last_seen: float
    confirmed: bool = True  # seen on the most recent frame


class FaceTracker:
    """Follows the largest usable face; says where to search next. Times are the frames' own (seconds)."""

    def __init__(self, *, roi_margin: float = 0.75, roi_face_px: int = 100, rescan_s: float = 0.5) -> None:
        self.roi_margin = roi_margin
        self.roi_face_px = roi_face_px
        self.rescan_s = rescan_s
        self.switches = 0
        self._track: _Track | None = None
        self._next_id = 1
        self._last_full: float | None = None

    @property
    def following(self) -> Box | None:
        return self._track.box if self._track is not None else None

    def search_region(self, t: float, height: int, width: int) -> tuple[Box, float] | None:
        """(region, scale) to search on this frame, or None when the whole frame must be searched.

        A region is used only while the face was confirmed on the previous
        frame and the last whole-frame search is less than ``rescan_s`` old.
        """
        if self.rescan_due(t):
            return None
        return self.followed_region(t, height, width)

    def followed_region(self, t: float, height: int, width: int) -> tuple[Box, float] | None:
        """(region, scale) around the followed face, rescan or not; None when the face was not
        confirmed on the previous frame (or nothing is followed, or time ran backwards)."""
        track = self._track
        if track is None or not track.confirmed or self._last_full is None or t < self._last_full:
            return None
        region = expand(track.box, self.roi_margin, height, width)
        if region.height <= 0 or region.width <= 0:
            return None
        return region, min(1.0, self.roi_face_px / max(track.box.size, 1))

    @property
    def confirmed(self) -> bool:
        """Whether the followed face was seen on the most recent frame (False when nothing is followed)."""
        return self._track is not None and self._track.confirmed

    def rescan_due(self, t: float) -> bool:
        """Whether the whole frame should be looked at again for a clearly larger face (every ``rescan_s``)."""
        return self._last_full is None or t < self._last_full or t - self._last_full >= self.rescan_s

    @staticmethod
    def takes_over(face: Box, followed: Box) -> bool:
        """Whether ``face``, found by a whole-frame search, is large enough to replace the followed face."""
        return face.size >= SWITCH_RATIO * followed.size

    def update(self, boxes: Sequence[Box], t: float, *, full: bool) -> tuple[Box, int, bool] | None:
        """Take this frame's usable faces (whole frame when ``full``, else the region); return
        (box, track id, new track) for the face followed now, or None when there is none."""
        if full:
            self._last_full = t
        track = self._track
        if track is not None and t - track.last_seen > _LOST_AFTER_S:
            track = self._track = None
        if not boxes:
            if track is not None:
                track.confirmed = False
            return None
        largest = max(boxes, key=lambda b: b.size)
        if track is not None:
            candidates = [b for b in boxes if same_face(track.box, b)]
            if candidates:
                mine = max(candidates, key=lambda b: iou(track.box, b))
                if not (full and largest is not mine and self.takes_over(largest, mine)):
                    track.box, track.last_seen, track.confirmed = mine, t, True
                    return mine, track.track_id, False
                self.switches += 1
        self._track = _Track(self._next_id, largest, t)
        self._next_id += 1
        return largest, self._track.track_id, True

    def switch_to(self, face: Box, t: float) -> tuple[Box, int, bool]:
        """Follow ``face`` from now on, a whole-frame search having found it clearly larger than the
        followed one (the caller compared them, at one scale); returns (box, new track id, True)."""
        self.switches += 1
        self._last_full = t
        self._track = _Track(self._next_id, face, t)
        self._next_id += 1
        return face, self._track.track_id, True

    def forget(self) -> None:
        self._track = None


class MotionGate:
    """Compares small grey thumbnails of consecutive frames: what changed, and where?

    A cell counts as changed when its grey level moved by more than
    ``_PIXEL_DELTA`` (thumbnails are area-averaged, which keeps sensor noise
    well below that). Three references are kept: the previous frame (scene
    cuts), the last frame searched without finding anyone (``fraction`` of
    the cells must have changed since, else an idle search is skipped; 0
    turns that off) and the frame of the last detection of the followed face
    (a face whose surroundings did not change has not moved).
    """

    _PIXEL_DELTA = 16
    _SCENE_CUT = 0.5

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self._previous: np.ndarray | None = None
        self._searched: np.ndarray | None = None
        self._detected: np.ndarray | None = None

    @staticmethod
    def _changed(a: np.ndarray | None, b: np.ndarray) -> np.ndarray | None:
        """Boolean map of changed cells, None when there is nothing comparable."""
        if a is None or a.shape != b.shape:
            return None
        return np.abs(a.astype(np.int16) - b.astype(np.int16)) > MotionGate._PIXEL_DELTA

    def see(self, thumb: np.ndarray) -> bool:
        """Record this frame's thumbnail; True when the scene cut since the previous frame."""
        changed = self._changed(self._previous, thumb)
        self._previous = thumb
        return changed is None or float(changed.mean()) >= self._SCENE_CUT

    def idle_change(self, thumb: np.ndarray) -> tuple[float, float, float, float] | None:
        """Where the picture changed since the last empty search, as (top, left, bottom, right)
        fractions of the frame; None when too little changed to be worth a search."""
        changed = self._changed(self._searched, thumb)
        if changed is None or self.fraction <= 0.0:
            return (0.0, 0.0, 1.0, 1.0)
        if float(changed.mean()) < self.fraction:
            return None
        ys, xs = np.nonzero(changed)
        h, w = changed.shape
        return (ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w)

    def searched(self, thumb: np.ndarray) -> None:
        """The frame was searched and nobody found."""
        self._searched = thumb

    def detected(self, thumb: np.ndarray) -> None:
        """The followed face was detected on this frame."""
        self._detected = thumb

    def still(self, thumb: np.ndarray, top: float, left: float, bottom: float, right: float) -> bool:
        """Whether nothing changed inside the given fractions of the frame since the last detection."""
        changed = self._changed(self._detected, thumb)
        if changed is None:
            return False
        h, w = changed.shape
        y0, x0 = int(top * h), int(left * w)
        y1, x1 = max(y0 + 1, int(np.ceil(bottom * h))), max(x0 + 1, int(np.ceil(right * w)))
        return not bool(changed[y0:y1, x0:x1].any())
