"""Enrollment photos to face templates, for the HTTP API.

The photo is decoded by core.imaging (EXIF rotation, alpha, bombs), shrunk to
a bounded size (HOG detection with upsampling on a 12-megapixel phone photo
takes many seconds, and an enrollment face is large), and must show one whole
face. What is kept is the photo's **template** (core.templates): the mean
encoding of the photo and 7 altered copies, one vector per photo. Photos are
never stored.

A template carries the door model's id (models.FACE_MODEL_ID): it is compared
with the encodings a door camera makes, in the same space. But the door's
threshold and margin were chosen for templates (docs/accuracy.md); a gallery of
plain per-photo encodings would need other values.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from core.faces import FaceEngine, FaceError
from core.imaging import ImageError, fit_within, load_image
from core.quality import QualityReport, QualitySettings, assess
from core.templates import Template, enroll_photo, photo_template


class PhotoRejected(ValueError):
    """One uploaded photo cannot be used; the message names it and says why."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"photo {filename!r} was refused: {reason}")
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True)
class CheckedPhoto:
    """A decoded photo (shrunk to the encoder's ``max_side``), its quality report and, when the
    report is ok, its template (None if the template could not be made: ``template_error`` says why)."""

    image: np.ndarray
    report: QualityReport
    template: Template | None
    template_error: FaceError | None = None


class PhotoEncoder:
    """Turns photo bytes into one 128-d template; the FaceEngine is created on first use.

    dlib's detector is not known to be safe to call from several threads at
    once, and the HTTP threadpool runs requests in parallel, so calls are
    serialised by a lock.
    """

    def __init__(self, *, face_engine: FaceEngine | None = None, max_side: int = 1600) -> None:
        self._engine = face_engine
        self.max_side = max_side
        self._lock = threading.Lock()

    @property
    def engine(self) -> FaceEngine:
        with self._lock:
            if self._engine is None:
                self._engine = FaceEngine()
            return self._engine

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def encode(self, data: bytes, filename: str) -> np.ndarray:
        """The template of the photo's one face (core.templates), or PhotoRejected."""
        engine = self.engine
        with self._lock:
            try:
                return enroll_photo(engine, data, self.max_side).vector
            except ImageError as err:
                raise PhotoRejected(filename, str(err).replace("the upload", "the file")) from err
            except FaceError as err:
                raise PhotoRejected(filename, str(err)) from err

    def check(self, data: bytes, settings: QualitySettings | None = None) -> CheckedPhoto:
        """Decode (ImageError), check the quality (core.quality) and, if it passes, make the template.

        The enrollment API's path for one sample (server/enrolling.check_sample):
        the quality checks see the same shrunk photo the template is made from.
        """
        engine = self.engine
        image, _scale = fit_within(load_image(data), self.max_side)
        with self._lock:
            report = assess(engine, image, settings)
            if not report.ok:
                return CheckedPhoto(image, report, None)
            try:
                return CheckedPhoto(image, report, photo_template(engine, image))
            except FaceError as err:
                return CheckedPhoto(image, report, None, err)
