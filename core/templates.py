"""Enrollment templates: one encoding per enrollment photo, the mean of the photo and 7 altered copies.

The accuracy study (docs/accuracy-study.md, section 3) found this the best use
of a single photo: against the photo's own encoding it lowers the false-reject
rate at the same false-accept rate, keeps one gallery entry per photo (so a
stranger gets no extra chances, unlike storing the copies as separate samples),
and enrolls a photo whose original hides the face from the detector but whose
mirror image does not. The copies (``AUGMENTATIONS``) are: the mirror image;
88% crops at the centre, top-left and bottom-right, resized back; the photo
darker (x0.7) and brighter (x1.3); and a half-resolution copy.

A template lives in the same space as a door camera's encodings (same dlib
model, ``models.FACE_MODEL_ID``), but its distances to probes are distributed
differently from a plain encoding's: **the door's threshold and margin were
chosen for templates** (docs/accuracy.md) and must be re-derived if enrollment
changes (plain encodings: 0.56 / 0.09 in the study).

Which face is the worker's (``enrollment_face``): the photo must show one
whole face. Two detections are not two people when one lies inside the other
(the detector firing twice on one face, e.g. on an open mouth), and a smaller
face cut by the photo's edge is a bystander, not the subject; any other second
face refuses the photo (``MultipleFaces``).

Geometry: the study's photos are LFW's 250x250 crops with the face about 42%
of the side. A larger photo is first cut to that framing around the face and
shrunk so the face is at most ``MAX_FACE_PX`` (the encoder's face chip is 150
px, so more pixels add nothing, and the eight detections stay cheap).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from core.faces import Box, FaceEngine, MultipleFaces, NoFaceFound
from core.imaging import fit_within, flip_horizontal, load_image, resize, scale_brightness

AUGMENTATIONS: tuple[str, ...] = ("flip", "crop88_c", "crop88_tl", "crop88_br", "gain70", "gain130", "lowres50")
"""The altered copies averaged with the photo (names as in the study's tables)."""

FACE_SHARE = 0.42
"""Face size / photo side in LFW's deep-funneled crops (~105 px of 250), the framing the study measured."""

MAX_FACE_PX = 200
"""Larger faces are shrunk to this before the copies are made (cost; the face chip is 150 px)."""

RESCUE_MAX_SIDE = 640
"""When the photo itself shows no face, its copies are searched at most at this size (cost)."""

UPSAMPLE = 1
"""HOG upsampling at enrollment, as in core.faces.FaceEngine.encode_single and the study."""

MAX_SIDE = 1600
"""Enrollment photos are shrunk to this longest side first (a 12-megapixel phone photo adds nothing but time)."""


@dataclass(frozen=True)
class Template:
    """One photo's template: ``vector`` (128,) float32, the subject's face ``box`` in the
    photo passed in (None when only the copies showed a face), and how many encodings
    (1 to 8) were averaged."""

    vector: np.ndarray
    box: Box | None
    copies: int

    @property
    def face_px(self) -> int:
        return self.box.size if self.box is not None else 0


def augment(image: np.ndarray, name: str) -> np.ndarray:
    """An altered copy: ``orig``, ``flip``, ``crop<pct>_<c|tl|br>`` (resized back to the
    width), ``gain<pct>`` (brightness x pct/100) or ``lowres<pct>`` (down to pct%, back up)."""
    h, w = image.shape[:2]
    if name == "orig":
        return image
    if name == "flip":
        return flip_horizontal(image)
    if name.startswith("crop"):
        pct, _, pos = name[4:].partition("_")
        if not pct.isdigit() or pos not in ("c", "tl", "br"):
            raise ValueError(f"unknown augmentation {name!r}")
        ch, cw = h * int(pct) // 100, w * int(pct) // 100
        oy, ox = {"c": ((h - ch) // 2, (w - cw) // 2), "tl": (0, 0), "br": (h - ch, w - cw)}[pos]
        return resize(np.ascontiguousarray(image[oy : oy + ch, ox : ox + cw]), w / cw)
    if name.startswith("gain") and name[4:].isdigit():
        return scale_brightness(image, int(name[4:]) / 100.0)
    if name.startswith("lowres") and name[6:].isdigit():
        f = int(name[6:]) / 100.0
        return resize(resize(image, f), 1.0 / f)
    raise ValueError(f"unknown augmentation {name!r}")


def _inside(inner: Box, outer: Box) -> bool:
    x, y = inner.center
    return outer.left <= x <= outer.right and outer.top <= y <= outer.bottom


def _cut_by_edge(box: Box, height: int, width: int) -> bool:
    return box.top <= 0 or box.left <= 0 or box.bottom >= height or box.right >= width


def enrollment_face(boxes: list[Box], height: int, width: int) -> Box:
    """The worker's face among the detections of an enrollment photo (see the module docstring)."""
    if not boxes:
        raise NoFaceFound("no face found: the face must be clearly visible, facing the camera")
    ranked = sorted(boxes, key=lambda b: b.size, reverse=True)
    subject = ranked[0]
    others = [
        b for b in ranked[1:]
        if not _inside(b, subject) and not (b.size < subject.size and _cut_by_edge(b, height, width))
    ]
    if others:
        raise MultipleFaces(1 + len(others))
    return subject


def _framed(image: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The study's framing around the face (a no-op for LFW-sized photos)."""
    h, w = image.shape[:2]
    side = int(round(box.size / FACE_SHARE))
    if max(h, w) > 1.25 * side:
        cx, cy = box.center
        top, left = max(0, int(cy - side / 2)), max(0, int(cx - side / 2))
        bottom, right = min(h, top + side), min(w, left + side)
        image = np.ascontiguousarray(image[top:bottom, left:right])
        box = Box(box.top - top, box.right - left, box.bottom - top, box.left - left)
    if box.size > MAX_FACE_PX:
        factor = MAX_FACE_PX / box.size
        image, box = resize(image, factor), box.scaled(factor)
    return image, box


def photo_template(engine: FaceEngine, image: np.ndarray) -> Template:
    """The template of one enrollment photo (RGB uint8), or NoFaceFound / MultipleFaces.

    The photo itself decides whose face it is; a copy that shows no face, or more
    than one, adds nothing. Only when the photo itself shows no face are the copies
    searched instead, and then one of them showing two faces refuses the photo.
    Deterministic: the same photo always gives the same template.
    """
    h, w = image.shape[:2]
    found = engine.detect(image, upsample=UPSAMPLE)
    subject: Box | None = enrollment_face(found, h, w) if found else None
    if subject is not None:
        base, _ = _framed(image, subject)
    else:
        base, _ = fit_within(image, RESCUE_MAX_SIDE)
    vectors: list[np.ndarray] = []
    ambiguous = 0
    for name in ("orig",) + AUGMENTATIONS:
        copy = augment(base, name)
        if name == "orig" and subject is not None and base is image:
            vectors.append(engine.encode(image, [subject], num_jitters=1)[0])
            continue
        boxes = engine.detect(copy, upsample=UPSAMPLE)
        if not boxes:
            continue
        try:
            face = enrollment_face(boxes, copy.shape[0], copy.shape[1])
        except MultipleFaces:
            ambiguous += 1
            continue
        vectors.append(engine.encode(copy, [face], num_jitters=1)[0])
    if not vectors:
        if ambiguous:
            raise MultipleFaces(2)
        raise NoFaceFound("no face found: the face must be clearly visible, facing the camera")
    if subject is None and ambiguous:
        raise MultipleFaces(2)
    vector = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    return Template(vector=vector, box=subject, copies=len(vectors))


def enroll_photo(engine: FaceEngine, source: str | os.PathLike[str] | bytes, max_side: int = MAX_SIDE) -> Template:
    """Real enrollment's path from a photo file (or its bytes) to its template: decode
    (EXIF, alpha, bombs: ImageError), shrink to ``max_side``, ``photo_template`` (FaceError)."""
    image, _scale = fit_within(load_image(source), max_side)
    return photo_template(engine, image)
