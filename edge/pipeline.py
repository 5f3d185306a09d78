"""One frame in, the followed face out: search little, encode only when the gate asks, match.

Per frame, :meth:`FramePipeline.analyse`:

1. **Where to search** (edge/tracker.py). While a face was found on the
   previous frame, only a region around it is searched, shrunk so the face is
   about ``detection.roi_face_px`` pixels; the whole frame is searched after
   a scene cut or a region search that found nothing (so following never
   loses a face that a whole-frame search would find); a region in which
   nothing changed since the face was last detected is not searched at all
   (the face is where it was). Every ``detection.rescan_s`` the whole frame is
   looked at again for someone clearly closer, at the smallest scale that
   still finds a face large enough to take over (SWITCH_RATIO times the
   followed one; a 250 px face at the door: a quarter-size search). With
   nobody followed (or the followed face missed on the previous frame, in
   its region and on the whole frame: it left), the frame is searched only
   when the picture changed since the last search that found nobody
   (``detection.idle_change``; at least every ``detection.idle_rescan_s``,
   at most every ``detection.idle_interval_s``: every other frame of a
   30 fps camera while the picture keeps changing), and then only around
   the part that changed when that is small: an empty doorway costs a
   thumbnail. Whole-frame searches run at ``detection.scale``, and a frame
   wider than ``detection.target_width`` is shrunk to that width
   (:func:`whole_frame_scale`): a person at the door has a face of ~1/8 of
   the frame width whatever the camera's resolution, so a 1080p camera costs
   what a 640x360 one does. Detection runs on the grey image (HOG on grey is
   ~25 % cheaper than on colour and found the same faces in the sample clips).
2. **Which face**: the largest face of at least ``detection.min_face_px``
   (the person at the door, not someone crossing the street), followed from
   frame to frame by the tracker.
3. **Encode and match** when asked (``encode``; edge/gate.py says when: on
   every frame while the face is near a worker and no grant came yet, rarely
   for a stranger, never once the visit is decided), and always on the first
   frame a followed face is large enough to be encoded. A face smaller than
   the policy's ``min_face_px`` (``min_encode_px``) is followed but never
   encoded: the policy would ignore its match, and an encoding costs as much
   as four whole-frame searches of a 640x360 frame. A stranger (the latest
   encoding of the track matched nobody within ``far``, the policy's
   threshold + edge.gate.NEAR) whose face has not changed since (same size,
   same 16x16 grey picture within 2 grey levels) is not encoded again for up
   to a second though the gate asks: the encoding would name nobody again.
   A face near a worker is encoded whenever asked. With an empty gallery
   nothing is encoded (there is nobody to match), but the face still counts as seen.
   On a station with cores to spare (``detection.encoder_processes``,
   edge/encoders.py) the encoding is computed by a worker process while the
   next frames are searched: a finished one is this frame's observation (the
   oldest first, one per frame), so the ``frames_required`` votes of a grant
   are encoded side by side instead of one after the other. At most one
   encoding per worker is in flight for the followed face; a frame that
   comes while all are busy is encoded in the frame loop's own process (one
   more encoder) when the face's latest encoding was near a worker, and
   otherwise only followed.
4. **Landmarks** (68 points, for liveness) of the followed face when asked.

``process()`` is the short form for a single frame: search, encode, match.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.faces import Box, FaceEngine
from core.imaging import resize, to_gray
from core.matcher import NO_MATCH, Gallery, Match
from edge.config import DetectionConfig
from edge.encoders import EncoderPool, EncoderUnavailable
from edge.gallery import GalleryHolder
from core.landmarks import upscaled_landmarks
from edge.gate import NEAR
from edge.policy import Observation, Verdict
from edge.tracker import SWITCH_RATIO, FaceFrame, FaceTracker, MotionGate, expand, iou, same_face

if TYPE_CHECKING:
    from edge.gate import DoorGate

log = logging.getLogger(__name__)

_THUMB_WIDTH = 80
_HOG_FACE_PX = 80  # dlib's HOG window: the smallest face found without upsampling
_CHANGE_MARGIN = 0.6  # in HOG-face sizes, around the changed part of an empty scene
_CHANGE_MAX_AREA = 0.8  # a larger changed part is searched as the whole frame
_RESCAN_SAVING = 0.85  # a rescan uses a reduced scale only when it is at most this fraction of the full one
_REUSE_MAX_S = 1.0  # a stranger's encoding stands for an unchanged face at most this long
_SAME_PICTURE = 2.0  # mean grey-level difference of two 16x16 face pictures that still counts as unchanged
_SIGNATURE_PX = 16


@dataclass(frozen=True, slots=True)
class _Encoded:
    """The latest encoding of a followed face: when, its size, its small grey picture, its match."""

    track_id: int
    t: float
    size: int
    signature: np.ndarray
    match: Match

    def near(self, far: float) -> bool:
        """Whether this encoding named a worker within ``far`` (a face that may vote soon)."""
        return self.match.identity is not None and self.match.distance <= far


@dataclass(frozen=True, slots=True)
class _Pending:
    """An encoding computed by a worker process (edge/encoders.py) for the face of an earlier frame."""

    track_id: int
    t: float
    size: int
    signature: np.ndarray
    future: "Future[np.ndarray]"


class FramePipeline:
    def __init__(self, engine: FaceEngine, settings: DetectionConfig, gallery: GalleryHolder | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.holder = gallery or GalleryHolder()
        self.tracker = FaceTracker(roi_margin=settings.roi_margin, roi_face_px=settings.roi_face_px, rescan_s=settings.rescan_s)
        self.motion = MotionGate(settings.idle_change)
        self.last_box: Box | None = None
        self.last_ms: float = 0.0
        self.counts: Counter[str] = Counter()
        self._last_search: float | None = None
        self._encoded_track: int | None = None  # the track whose face was last encoded (or sent to be)
        self._encoded: _Encoded | None = None
        self.encoders: EncoderPool | None = None  # set by the agent on a station with cores to spare
        self._pending: deque[_Pending] = deque()

    @property
    def encodings_computed(self) -> int:
        return self.counts["encodings"]

    def process(self, rgb: np.ndarray, gallery: Gallery | None = None) -> Observation | None:
        """The observation for the largest usable face of the frame (always encoded), or None."""
        face = self.analyse(rgb, gallery=gallery)
        return face.observation if face is not None else None

    def analyse(
        self,
        rgb: np.ndarray,
        *,
        t: float | None = None,
        encode: bool = True,
        landmarks: bool = False,
        gallery: Gallery | None = None,
        min_encode_px: int = 0,
        eye_upscale_px: int = 0,
        far: float | None = None,
    ) -> FaceFrame | None:
        """The followed face of this frame (see the module docstring), or None when there is none.

        ``t``: the frame's time in seconds (its capture time; default now),
        used for the rescan and idle intervals. ``min_encode_px``: a face
        smaller than this is followed but never encoded (the policy ignores
        faces below its ``min_face_px``, so their encodings could not count).
        ``far``: a face whose latest encoding matched nobody within this
        distance is not encoded again, though asked, while its picture has
        not changed since (see :meth:`_unchanged_far`); None: always encode
        when asked.
        """
        started = time.perf_counter()
        now = time.monotonic() if t is None else t
        try:
            gray = to_gray(rgb)
            found = self._find(gray, now)
            if found is None:
                self.last_box = None
                return None
            box, track_id, new_track = found
            self.last_box = box
            observation = None
            current = gallery if gallery is not None else self.holder.gallery
            if len(current) == 0:
                observation = Observation(face_px=box.size, match=NO_MATCH)
            elif box.size < min_encode_px:
                self.counts["too_small"] += 1
            else:
                observation = self._collect(track_id, current) if self._pending else None
                if track_id != self._encoded_track or (encode and not self._unchanged_far(gray, box, track_id, now, far)):
                    # A face is always encoded once; then when asked, unless it is a stranger who has not moved.
                    if not self._offload(rgb, gray, box, track_id, now, far) and observation is None:
                        vector = self.engine.encode(rgb, [box])[0]
                        self.counts["encodings"] += 1
                        self._encoded_track = track_id
                        observation = Observation(face_px=box.size, match=current.match(vector))
                        self._encoded = _Encoded(track_id, now, box.size, _signature(gray, box), observation.match)
                elif encode:
                    self.counts["unchanged_far"] += 1  # the encoding would say what the last one said
            points = eyes = None
            if landmarks:
                points = self.engine.landmarks_of(rgb, [box])[0]
                self.counts["landmarks"] += 1
                if box.size < eye_upscale_px:  # a small face's eyelids are a few pixels: measure them finely
                    eyes = upscaled_landmarks(self.engine, rgb, box, eye_upscale_px)
                    self.counts["eye_crops"] += 1
            return FaceFrame(box, track_id, new_track, observation, points, (rgb.shape[0], rgb.shape[1]), eyes)
        finally:
            self.last_ms = (time.perf_counter() - started) * 1000.0

    def _offload(self, rgb: np.ndarray, gray: np.ndarray, box: Box, track_id: int, now: float,
                 far: float | None) -> bool:
        """Send this frame's face to an encoder process; False when it must be encoded here: no pool, the
        pool restarting, or every worker busy with this face's earlier frames while its latest encoding
        named a worker within ``far`` (the frame loop's own core is then one more encoder for the votes).
        A face not known to be near anyone waits for the workers: encoding it here too would hold up the
        frame loop, and the frames that count toward a stranger's denial, for a vote it is unlikely to give."""
        pool = self.encoders
        if pool is None:
            return False
        if sum(1 for p in self._pending if p.track_id == track_id) >= pool.processes:
            self.counts["encoders_busy"] += 1
            last = self._encoded
            return not (far is None or (last is not None and last.track_id == track_id and last.near(far)))
        try:
            future = pool.submit(rgb, box)
        except EncoderUnavailable:
            self.counts["encoder_fallbacks"] += 1
            return False
        self._pending.append(_Pending(track_id, now, box.size, _signature(gray, box), future))
        self._encoded_track = track_id
        self.counts["encodings_sent"] += 1
        return True

    def _collect(self, track_id: int, gallery: Gallery) -> Observation | None:
        """The oldest finished encoding of the followed face, as this frame's observation (one per frame,
        in the order the frames came; the others wait for the next frames). Encodings of faces no longer
        followed are dropped; a failed one (a worker died) makes the pool restart."""
        while self._pending and self._pending[0].future.done():
            job = self._pending.popleft()
            err = job.future.exception()
            if err is not None:
                self.counts["encoder_failures"] += 1
                if self.encoders is not None:
                    self.encoders.failed(err)
                continue
            if job.track_id != track_id:
                self.counts["encodings_dropped"] += 1
                continue
            self.counts["encodings"] += 1
            match = gallery.match(job.future.result())
            self._encoded = _Encoded(track_id, job.t, job.size, job.signature, match)
            return Observation(face_px=job.size, match=match)
        return None

    def _unchanged_far(self, gray: np.ndarray, box: Box, track_id: int, now: float, far: float | None) -> bool:
        """Whether the followed face's latest encoding, of this track, matched nobody within ``far``, is
        less than _REUSE_MAX_S old, and the face looks the same now: same size (within 10 %), and its
        16x16 grey picture within _SAME_PICTURE grey levels on average. A new encoding would then say
        the same (a stranger), and the gate counts the frame as the stranger still there.

        A worker whose latest encoding was near is always encoded when the gate asks: every vote
        must rest on an encoding of its own frame.
        """
        last = self._encoded
        if far is None or last is None or last.track_id != track_id or not 0.0 <= now - last.t < _REUSE_MAX_S:
            return False
        if last.near(far):
            return False
        if abs(box.size - last.size) > 0.1 * last.size:
            return False
        now_sig = _signature(gray, box)
        return now_sig.shape == last.signature.shape and float(np.abs(now_sig - last.signature).mean()) <= _SAME_PICTURE

    def _find(self, gray: np.ndarray, now: float) -> tuple[Box, int, bool] | None:
        height, width = gray.shape[:2]
        thumb = resize(gray, min(1.0, _THUMB_WIDTH / max(width, 1)))
        cut = self.motion.see(thumb)
        followed = self.tracker.following
        if followed is not None:
            region = None if cut else self.tracker.followed_region(now, height, width)
            if region is not None:
                rescan = self.tracker.rescan_due(now)
                bigger = self._bigger_scale(followed, width) if rescan else None
                if rescan and bigger is None:
                    return self._search(gray, thumb, now, None)  # a reduced search would save little
                area, scale = region
                if self.motion.still(thumb, *_fractions(area, height, width)):
                    self.counts["reused"] += 1  # nothing around the face changed: it is where it was
                    usable = [followed]
                else:
                    crop = gray[area.top : area.bottom, area.left : area.right]
                    usable = self._usable(self._detect(crop, scale, area))
                    self.counts["region_searches"] += 1
                    if not usable:
                        self.counts["region_misses"] += 1  # moved out of the region, or the detector missed it
                        return self._search(gray, thumb, now, None)
                    self.motion.detected(thumb)
                if bigger is None:
                    return self.tracker.update(usable, now, full=False)
                return self._rescan(gray, thumb, usable, scale, bigger, now)
            if cut or self.tracker.confirmed:
                return self._search(gray, thumb, now, None)
            # The face was not found on the previous frame, on the whole frame either: it left (or turned
            # away). Looking for it again is looking for anyone: the rules for an empty scene apply.
        last, s = self._last_search, self.settings
        if last is not None and last <= now < last + s.idle_interval_s:
            self.counts["idle_skips"] += 1
            return self.tracker.update([], now, full=False)
        due = last is None or now < last or now - last >= s.idle_rescan_s
        change = (0.0, 0.0, 1.0, 1.0) if due else self.motion.idle_change(thumb)
        if change is None:
            self.counts["idle_skips"] += 1
            return self.tracker.update([], now, full=False)
        return self._search(gray, thumb, now, change)

    def _search(self, gray: np.ndarray, thumb: np.ndarray, now: float, change: tuple[float, ...] | None) -> tuple[Box, int, bool] | None:
        """Search the whole frame, or with nobody followed only where it changed (``change``, fractions)."""
        height, width = gray.shape[:2]
        area = None
        if change is not None and change != (0.0, 0.0, 1.0, 1.0):
            # A new face is at least partly where the picture changed; the margin (about half the
            # smallest face the search can find) takes in the rest of it.
            m = _CHANGE_MARGIN * _HOG_FACE_PX / whole_frame_scale(self.settings, width)
            top, left, bottom, right = change
            area = Box(int(top * height - m), int(right * width + m), int(bottom * height + m), int(left * width - m)).clipped(height, width)
            if area.height * area.width > _CHANGE_MAX_AREA * height * width:
                area = None
        scale = whole_frame_scale(self.settings, width)
        if area is None:
            boxes = self._detect(gray, scale)
            self.counts["full_searches"] += 1
        else:
            boxes = self._detect(gray[area.top : area.bottom, area.left : area.right], scale, area)
            self.counts["change_searches"] += 1
        self._last_search = now
        usable = self._usable(boxes)
        if usable:
            self.motion.detected(thumb)
        else:
            self.motion.searched(thumb)
        return self.tracker.update(usable, now, full=True)

    def _bigger_scale(self, followed: Box, width: int) -> float | None:
        """The scale at which a whole-frame search still finds every face large enough to take over
        from ``followed`` (FaceTracker.takes_over); None when that is (nearly) the full search scale."""
        scale = _HOG_FACE_PX / (SWITCH_RATIO * max(followed.size, 1))
        return scale if scale < _RESCAN_SAVING * whole_frame_scale(self.settings, width) else None

    def _rescan(
        self, gray: np.ndarray, thumb: np.ndarray, found: list[Box], region_scale: float, scale: float, now: float
    ) -> tuple[Box, int, bool] | None:
        """The periodic look at the whole frame while a face is followed and was found in its region.

        Its only purpose is to notice someone clearly closer (a face at least
        SWITCH_RATIO times larger takes over), so the frame is searched at
        ``scale``: the smallest at which such a face is still found (smaller
        faces could not take over, and the followed face itself was just found
        in its region, at ``region_scale``). HOG reports sizes in steps of
        about 20 %, each scale its own, so sizes are only compared at one
        scale: a face found here that might be large enough is measured again
        in a region around it at ``region_scale``, like the followed face.
        """
        followed = self.tracker.following
        assert followed is not None
        mine = max((b for b in found if same_face(followed, b)), key=lambda b: iou(followed, b), default=None)
        if mine is None:  # the region holds someone else: choose as a whole-frame search would
            return self._search(gray, thumb, now, None)
        self.counts["rescans"] += 1
        height, width = gray.shape[:2]
        others = [b for b in self._usable(self._detect(gray, scale)) if not same_face(mine, b) and b.size > mine.size]
        for other in sorted(others, key=lambda b: b.size, reverse=True):
            area = expand(other, self.settings.roi_margin, height, width)
            again = self._detect(gray[area.top : area.bottom, area.left : area.right], region_scale, area)
            self.counts["rescan_checks"] += 1
            twin = max((b for b in again if same_face(other, b)), key=lambda b: iou(other, b), default=None)
            if twin is not None and self.tracker.takes_over(twin, mine):
                return self.tracker.switch_to(twin, now)
        return self.tracker.update(found, now, full=True)

    def _usable(self, boxes: list[Box]) -> list[Box]:
        return [b for b in boxes if b.size >= self.settings.min_face_px]

    def _detect(self, gray: np.ndarray, scale: float, offset: Box | None = None) -> list[Box]:
        """HOG on (a crop of) the grey frame; boxes in full-frame pixels."""
        boxes = self.engine.detect(gray, scale=scale, upsample=self.settings.upsample)
        if offset is None:
            return boxes
        return [Box(b.top + offset.top, b.right + offset.left, b.bottom + offset.top, b.left + offset.left) for b in boxes]


def _signature(gray: np.ndarray, box: Box) -> np.ndarray:
    """The face as a 16x16 grey picture (int16): what "the face looks the same" is judged on."""
    area = box.clipped(gray.shape[0], gray.shape[1])
    crop = gray[area.top : area.bottom, area.left : area.right].astype(np.int32)
    h, w = crop.shape[:2]
    if h < _SIGNATURE_PX or w < _SIGNATURE_PX:
        return np.zeros((0, 0), np.int16)
    ys = np.linspace(0, h, _SIGNATURE_PX + 1).astype(int)
    xs = np.linspace(0, w, _SIGNATURE_PX + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(crop, ys[:-1], axis=0), xs[:-1], axis=1)
    return (sums // np.outer(np.diff(ys), np.diff(xs))).astype(np.int16)  # block means


def whole_frame_scale(settings: DetectionConfig, width: int) -> float:
    """The scale of a whole-frame search of a frame ``width`` pixels wide: ``settings.scale``, or
    less for a frame wider than ``settings.target_width`` (shrunk to that width)."""
    if settings.target_width and width > settings.target_width:
        return min(settings.scale, settings.target_width / width)
    return settings.scale


def _fractions(area: Box, height: int, width: int) -> tuple[float, float, float, float]:
    return (area.top / height, area.left / width, area.bottom / height, area.right / width)


def run_frame(pipeline: FramePipeline, gate: "DoorGate", rgb: np.ndarray, t: float) -> Verdict | None:
    """One frame through the whole door path (pipeline, then gate): shared by the agent and replay."""
    face = pipeline.analyse(
        rgb, t=t, encode=gate.wants_encoding, landmarks=gate.wants_landmarks, eye_upscale_px=gate.eye_upscale_px,
        min_encode_px=gate.policy.config.min_face_px,  # the policy ignores smaller faces: never worth encoding
        far=gate.policy.config.threshold + NEAR,  # beyond it a match cannot vote, nor soon: an unchanged stranger is not re-encoded
    )
    return gate.observe(face)
