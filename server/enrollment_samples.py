"""One enrollment sample: quality, template, thumbnail, and the check against enrolled faces.

:func:`check_sample` is the server's verdict on one photo or camera snapshot
(``POST /api/enrollment/samples``): decoded and checked by core.quality, its
template made (core.templates), a small face thumbnail cut out, and the
enrolled worker with the same face looked up (:func:`find_duplicate`). It
stores nothing. The duplicate threshold is the door's own match threshold
(core.matcher.DEFAULT_THRESHOLD, the door's default): a face the door would take for an enrolled worker
is a duplicate.

The enrolled faces are held as one core.matcher.Gallery per database,
rebuilt only when the gallery version has moved (every enrollment,
withdrawal, suspension or deletion moves it), so checking a sample against
10,000 workers costs one matrix-vector product, not a table scan.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.faces import Box, MultipleFaces
from core.imaging import MAX_FILE_BYTES, MAX_IMAGE_PIXELS, ImageError, encode_jpeg, fit_within
from core.matcher import DEFAULT_THRESHOLD, Gallery
from core.quality import Problem, QualityReport, QualitySettings
from server import gallery
from server.enrollment import PhotoEncoder
from server.tables import FaceSample, Worker

DUPLICATE_THRESHOLD: float = DEFAULT_THRESHOLD
"""A new face this close to an enrolled worker's sample is a duplicate: the door's own match threshold."""

THUMBNAIL_PX = 160


@dataclass(frozen=True)
class Duplicate:
    """An enrolled worker with the same face, and the distance of the closest pair of samples."""

    worker_id: str
    name: str
    distance: float


@dataclass(frozen=True)
class SampleResult:
    """One photo's verdict: problems (empty when usable), and when usable its template vector,
    a small JPEG thumbnail (returned to the caller, stored only if the consent allows) and the
    enrolled worker with the same face, if any."""

    problems: tuple[Problem, ...]
    report: QualityReport | None = None
    vector: np.ndarray | None = None
    thumbnail: bytes | None = None
    duplicate: Duplicate | None = None
    model_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and self.vector is not None


def check_sample(
    *, session: Session, encoder: PhotoEncoder, data: bytes, settings: QualitySettings | None = None,
    threshold: float = DUPLICATE_THRESHOLD,
) -> SampleResult:
    """Check one photo (bytes as uploaded); stores nothing."""
    try:
        checked = encoder.check(data, settings)
    except ImageError as err:
        return SampleResult((image_problem(err),))
    report = checked.report
    if not report.ok:
        return SampleResult(report.problems, report)
    if checked.template is None:  # the quality check saw one face, the template's copies did not agree
        code = "several_faces" if isinstance(checked.template_error, MultipleFaces) else "no_face"
        return SampleResult((Problem(code),), report)
    assert report.box is not None
    vector = checked.template.vector
    return SampleResult(
        (), report, vector, thumbnail(checked.image, report.box),
        find_duplicate(session=session, vectors=[vector], threshold=threshold), encoder.model_id,
    )


def image_problem(err: ImageError) -> Problem:
    """The problem code of a file core.imaging refused: too large, or not a usable image."""
    text = str(err)
    if "pixels" in text or "too large" in text or "larger than" in text or " MB" in text:
        return Problem("image_too_large", {"megapixels": MAX_IMAGE_PIXELS // 1_000_000,
                                           "megabytes": MAX_FILE_BYTES // 2**20})
    return Problem("unreadable_image")


def thumbnail(image: np.ndarray, box: Box) -> bytes:
    """A JPEG of the face with some margin, at most THUMBNAIL_PX on its longer side."""
    h, w = image.shape[:2]
    side = int(max(box.height, box.width) * 1.8)
    cx, cy = (int(v) for v in box.center)
    y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
    crop = np.ascontiguousarray(image[y0 : min(h, y0 + side), x0 : min(w, x0 + side)])
    return encode_jpeg(fit_within(crop, THUMBNAIL_PX)[0], quality=80)


_cache_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[int, Gallery]] = weakref.WeakKeyDictionary()


def enrolled_gallery(session: Session) -> Gallery:
    """Every enrolled face sample as a Gallery keyed by worker id, rebuilt when the gallery version moves."""
    version = gallery.latest_version(session=session)
    key = session.get_bind().engine
    with _cache_lock:
        held = _cache.get(key)
        if held is not None and held[0] == version:
            return held[1]
    rows = session.execute(select(FaceSample.worker_id, FaceSample.vector).order_by(FaceSample.id))
    built = Gallery([(wid, gallery.vector_from_bytes(blob)) for wid, blob in rows], version=version)
    with _cache_lock:
        _cache[key] = (version, built)
    return built


def find_duplicate(
    *, session: Session, vectors: Sequence[np.ndarray], threshold: float = DUPLICATE_THRESHOLD
) -> Duplicate | None:
    """The enrolled worker closest to any of ``vectors``, if within ``threshold``."""
    known = enrolled_gallery(session)
    best: tuple[float, str] | None = None
    for vec in vectors:
        match = known.match(vec)
        if match.identity is not None and match.distance <= threshold and (best is None or match.distance < best[0]):
            best = (match.distance, match.identity)
    if best is None:
        return None
    name = session.scalar(select(Worker.name).where(Worker.worker_id == best[1])) or ""
    return Duplicate(best[1], name, round(best[0], 4))
