"""Photo files to enrollment templates, with a plain sentence for every refusal.

Each photo becomes its template (core.templates: the mean encoding of the photo
and 7 altered copies), the same vector the server makes from an uploaded
photo, so a worker enrolled here and one enrolled through the HTTP API are
matched alike. The door's threshold belongs to this enrollment method
(docs/accuracy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.faces import FaceEngine, FaceError
from core.imaging import ImageError
from core.templates import MAX_SIDE, enroll_photo

__all__ = ["MAX_SIDE", "Sample", "encode_photo"]


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
    """One whole face, as its template; otherwise a Sample that says what is wrong.

    ``face_px`` is the face's size in the (shrunk) photo, 0 when only the
    photo's altered copies showed the face.
    """
    try:
        template = enroll_photo(engine, path, MAX_SIDE)
    except (ImageError, FaceError) as err:
        return Sample(path, None, str(err))
    return Sample(path, template.vector, face_px=template.face_px)
