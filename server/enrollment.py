"""Enrollment photos to face encodings, for the HTTP API.

The photo is decoded by core.imaging (EXIF rotation, alpha, bombs), shrunk to
a bounded size (HOG detection with upsampling on a 12-megapixel phone photo
takes many seconds, and an enrollment face is large), and must show exactly
one face. Photos are never stored: only the encoding is kept.
"""

from __future__ import annotations

import threading

import numpy as np

from core.faces import FaceEngine, FaceError
from core.imaging import ImageError, fit_within, load_image


class PhotoRejected(ValueError):
    """One uploaded photo cannot be used; the message names it and says why."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"photo {filename!r} was refused: {reason}")
        self.filename = filename
        self.reason = reason


class PhotoEncoder:
    """Turns photo bytes into one 128-d encoding; the FaceEngine is created on first use.

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
        """The encoding of the photo's single face, or PhotoRejected."""
        try:
            rgb = load_image(data)
        except ImageError as err:
            raise PhotoRejected(filename, str(err).replace("the upload", "the file")) from err
        rgb, _scale = fit_within(rgb, self.max_side)
        engine = self.engine
        with self._lock:
            try:
                vector, _box = engine.encode_single(rgb)
            except FaceError as err:
                raise PhotoRejected(filename, str(err)) from err
        return vector
