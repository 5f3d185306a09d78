"""Enrollment templates (core.templates): which face is the worker's, the altered copies, and real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.faces import Box, FaceEngine, MultipleFaces, NoFaceFound
from core.imaging import load_image
from core.templates import AUGMENTATIONS, augment, enroll_photo, enrollment_face, photo_template

LFW = "lfw_dev"
EX = "face_recognition_examples"


# -- which face is the worker's (pure) ------------------------------------------------------


def test_one_face_is_the_workers() -> None:
    face = Box(60, 180, 180, 60)
    assert enrollment_face([face], 250, 250) == face


def test_no_face_and_two_whole_faces_are_refused() -> None:
    with pytest.raises(NoFaceFound, match="no face"):
        enrollment_face([], 250, 250)
    two = [Box(50, 120, 120, 50), Box(60, 230, 130, 160)]  # side by side, both whole
    with pytest.raises(MultipleFaces, match="2 faces found"):
        enrollment_face(two, 250, 250)


def test_a_second_detection_inside_the_face_is_the_same_face() -> None:
    # The detector firing again on an open mouth (LFW Brad_Garrett_0001): one person.
    face, mouth = Box(80, 175, 187, 67), Box(153, 152, 205, 101)
    assert enrollment_face([mouth, face], 250, 250) == face


def test_a_smaller_face_cut_by_the_edge_is_a_bystander_but_a_whole_one_is_not() -> None:
    face = Box(68, 175, 175, 67)
    cut = Box(63, 71, 138, 0)  # at the left edge (LFW Alvaro_Uribe_0007)
    assert enrollment_face([face, cut], 250, 250) == face
    whole = Box(63, 60, 120, 5)  # the same size, fully inside the photo
    with pytest.raises(MultipleFaces):
        enrollment_face([face, whole], 250, 250)
    # A face cut by the edge that is the larger one is the subject, and the whole smaller one refuses the photo.
    with pytest.raises(MultipleFaces):
        enrollment_face([Box(0, 200, 150, 40), whole], 250, 250)


def test_copies_keep_the_shape_and_change_the_pixels() -> None:
    img = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    for name in AUGMENTATIONS + ("crop94_br", "gain85", "lowres70"):
        out = augment(img, name)
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img), name
    assert np.array_equal(augment(img, "flip")[:, ::-1], img)
    assert augment(img, "orig") is img
    assert augment(img, "gain130").mean() > img.mean() > augment(img, "gain70").mean()
    for bad in ("rotate5", "crop88_x", "gainhigh"):
        with pytest.raises(ValueError, match="unknown augmentation"):
            augment(img, bad)


# -- real photos ---------------------------------------------------------------------------


def _lfw(faces: Path, name: str, n: int) -> Path:
    return faces / LFW / name / f"{name}_{n:04d}.jpg"


@pytest.mark.faces
@pytest.mark.models
def test_a_template_is_nearer_the_same_persons_other_photos_than_a_strangers(
    faces: Path, face_engine: FaceEngine
) -> None:
    people = {"Hu_Jintao": (2, [4, 8, 9]), "Bill_Clinton": (6, [10, 16]), "Natalie_Cole": (1, [2, 3])}
    templates = {who: enroll_photo(face_engine, _lfw(faces, who, first)).vector for who, (first, _) in people.items()}
    for who, (_, others) in people.items():
        for n in others:
            image = load_image(_lfw(faces, who, n))
            boxes = face_engine.detect(image, upsample=1)
            probe = face_engine.encode(image, [max(boxes, key=lambda b: b.size)])[0]
            d = {w: float(np.linalg.norm(probe - t)) for w, t in templates.items()}
            nearest = min(d, key=d.__getitem__)
            assert nearest == who, (who, n, d)
            assert d[who] < 0.56, (who, n, d)  # within the door's threshold


@pytest.mark.faces
@pytest.mark.models
def test_a_template_is_deterministic_and_averages_eight_copies(faces: Path, face_engine: FaceEngine) -> None:
    path = _lfw(faces, "Hu_Jintao", 2)
    a, b = enroll_photo(face_engine, path), enroll_photo(face_engine, path.read_bytes())
    assert np.array_equal(a.vector, b.vector) and a.vector.dtype == np.float32 and a.vector.shape == (128,)
    assert a.copies == 1 + len(AUGMENTATIONS) and a.face_px > 80
    # The template is not the photo's own encoding, but close to it: the copies move it a little.
    plain = face_engine.encode(load_image(path), [a.box])[0]  # type: ignore[list-item]
    assert 0.0 < float(np.linalg.norm(a.vector - plain)) < 0.15


@pytest.mark.faces
@pytest.mark.models
def test_a_face_only_the_mirror_image_shows_still_enrolls(faces: Path, face_engine: FaceEngine) -> None:
    # HOG finds no face in this LFW photo, but in its mirror image and one crop (docs/accuracy-study.md).
    image = load_image(_lfw(faces, "Roseanne_Barr", 1))
    assert face_engine.detect(image, upsample=1) == []
    template = photo_template(face_engine, image)
    assert template.box is None and 1 <= template.copies < 1 + len(AUGMENTATIONS)
    probe_image = load_image(_lfw(faces, "Roseanne_Barr", 2))
    probe = face_engine.encode(probe_image, face_engine.detect(probe_image, upsample=1)[:1])[0]
    assert float(np.linalg.norm(probe - template.vector)) < 0.56


@pytest.mark.faces
@pytest.mark.models
def test_photos_of_two_people_and_of_nobody_are_refused(faces: Path, face_engine: FaceEngine) -> None:
    with pytest.raises(MultipleFaces, match="2 faces found"):
        enroll_photo(face_engine, faces / EX / "_multi_person/two_people.jpg")
    with pytest.raises(NoFaceFound):
        photo_template(face_engine, np.full((300, 300, 3), 128, dtype=np.uint8))


@pytest.mark.faces
@pytest.mark.models
def test_a_large_photo_is_framed_like_the_study_and_matches_its_small_copy(
    faces: Path, face_engine: FaceEngine
) -> None:
    # The same portrait at 1080p and 240p: the big one is cut to the study's framing and shrunk,
    # so both give nearly the same template (and the big one does not cost 8 HOG passes at 1080p).
    big = enroll_photo(face_engine, faces / EX / "obama/obama-1080p.jpg")
    small = enroll_photo(face_engine, faces / EX / "obama/obama-240p.jpg")
    assert float(np.linalg.norm(big.vector - small.vector)) < 0.2
