"""Detection and encoding with the real dlib models on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.faces import FaceEngine, MultipleFaces, NoFaceFound
from core.imaging import load_image
from core.matcher import Gallery
from models import FACE_MODEL_ID

pytestmark = [pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"


def test_one_face_gives_a_128_float32_encoding(faces: Path, face_engine: FaceEngine) -> None:
    vec, box = face_engine.encode_single(load_image(faces / EX / "obama/obama.jpg"))
    assert vec.shape == (128,) and vec.dtype == np.float32
    assert box.size > 100
    assert face_engine.model_id == FACE_MODEL_ID


def test_the_same_person_is_closer_than_another(faces: Path, face_engine: FaceEngine) -> None:
    def enc(rel: str) -> np.ndarray:
        return face_engine.encode_single(load_image(faces / EX / rel))[0]

    gallery = Gallery([("obama", enc("obama/obama.jpg")), ("biden", enc("biden/biden.jpg"))])
    m = gallery.match(enc("obama/obama2.jpg"))
    assert m.identity == "obama" and m.distance < 0.5 and m.margin > 0.2
    assert gallery.match(enc("biden/biden2.jpg")).identity == "biden"


def test_group_photo_is_refused_for_enrollment(faces: Path, face_engine: FaceEngine) -> None:
    with pytest.raises(MultipleFaces, match="exactly one person") as info:
        face_engine.encode_single(load_image(faces / EX / "_multi_person/two_people.jpg"))
    assert info.value.count == 2


def test_no_face_is_reported(face_engine: FaceEngine) -> None:
    blank = np.full((300, 300, 3), 128, dtype=np.uint8)
    with pytest.raises(NoFaceFound, match="no face"):
        face_engine.encode_single(blank)


def test_downscaled_detection_maps_boxes_back(faces: Path, face_engine: FaceEngine) -> None:
    img = load_image(faces / EX / "obama/obama.jpg")
    full = face_engine.detect(img)
    half = face_engine.detect(img, scale=0.5)
    assert len(full) == len(half) == 1
    # HOG boxes move by a few cells between scales: within 15% of the face size.
    tol = 0.15 * full[0].size
    assert abs(full[0].top - half[0].top) < tol and abs(full[0].size - half[0].size) < tol
