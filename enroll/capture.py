"""Photo files to enrollment encodings, with a plain sentence for every refusal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.faces import FaceEngine, FaceError
from core.imaging import ImageError, fit_within, load_image

# Phone photos are 12+ megapixels; HOG on that is slow and no more accurate.
MAX_SIDE = 1600


@dataclass(frozen=True)
class Sample:
    path: Path
    vector: np.ndarray | None
    problem: str | None = None
    face_px: int = 0

    @property
    def ok(self) -> bool:
        return self.vector is not None


def encode_photo(engine: FaceEngine, path: Path) -> Sample:
    """Exactly one face, encoded; otherwise a Sample that says what is wrong."""
    try:
        image, _scale = fit_within(load_image(path), MAX_SIDE)
        vector, box = engine.encode_single(image)
    except (ImageError, FaceError) as err:
        return Sample(path, None, str(err))
    return Sample(path, vector, face_px=box.size)
