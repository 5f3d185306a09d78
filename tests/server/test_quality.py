"""Enrollment quality checks (core.quality) on real photos, and on spoiled copies made here.

Every check must pass the real enrollment photos (LFW enroll photos, the
face_recognition examples) and refuse the spoiled ones with the right code;
the sentences staff read (enroll/messages.py) exist in both languages.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from core.faces import FaceEngine
from core.i18n import translator
from core.imaging import Capture, load_image, resize, scale_brightness
from core.quality import CODES, Problem, QualitySettings, assess, prepare
from enroll.messages import PROBLEMS, problem_message

pytestmark = [pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"
GOOD = (
    f"{EX}/obama/obama.jpg",
    f"{EX}/biden/biden.jpg",
    f"{EX}/obama/32bit.png",  # RGBA
    f"{EX}/obama/obama-240p.jpg",  # the smallest sample face (62 px)
    f"{EX}/lin_manuel_miranda/lin-manuel-miranda.png",
    f"{EX}/kit_harington/john2.jpeg",
    "lfw_dev/Roseanne_Barr/Roseanne_Barr_0001.jpg",  # HOG misses it at upsample 1: found by the fallback
    "lfw_dev/Gary_Doer/Gary_Doer_0001.jpg",  # the most turned enroll photo (|yaw| 0.29)
    "lfw_dev/Binyamin_Ben-Eliezer/Binyamin_Ben-Eliezer_0001.jpg",  # the narrowest open eyes of the enroll photos
    "lfw_dev/Alvaro_Uribe/Alvaro_Uribe_0007.jpg",
)
SPOIL_FROM = (f"{EX}/obama/obama.jpg", "lfw_dev/Bill_Clinton/Bill_Clinton_0006.jpg")


def _photo(faces: Path, rel: str) -> np.ndarray:
    return prepare(load_image(faces / rel))


@pytest.mark.parametrize("rel", GOOD)
def test_real_enrollment_photos_pass(rel: str, faces: Path, face_engine: FaceEngine) -> None:
    report = assess(face_engine, _photo(faces, rel))
    assert report.ok, (rel, report.problems)
    cfg = QualitySettings()
    assert report.faces == 1 and report.box is not None and report.face_px >= cfg.min_face_px
    assert report.sharpness is not None and report.sharpness >= cfg.min_sharpness
    assert report.brightness is not None and cfg.min_brightness <= report.brightness <= cfg.max_brightness
    assert report.yaw is not None and abs(report.yaw) <= cfg.max_yaw
    assert report.ear is not None and report.ear >= cfg.min_eye_openness


@pytest.mark.parametrize("rel", SPOIL_FROM)
def test_dark_and_overexposed_copies_are_refused(rel: str, faces: Path, face_engine: FaceEngine) -> None:
    photo = _photo(faces, rel)
    dark = assess(face_engine, scale_brightness(photo, 0.3))
    assert dark.codes == ["too_dark"], dark.problems
    assert dark.brightness is not None and dark.brightness < QualitySettings().min_brightness
    bright = assess(face_engine, scale_brightness(photo, 2.5))
    assert "too_bright" in bright.codes or "no_face" in bright.codes, bright.problems
    assert not bright.ok


@pytest.mark.parametrize("rel", SPOIL_FROM)
def test_blurred_copy_is_refused(rel: str, faces: Path, face_engine: FaceEngine) -> None:
    photo = _photo(faces, rel)
    original = assess(face_engine, photo)
    sigma = 0.03 * original.face_px
    blurred = assess(face_engine, cv2.GaussianBlur(photo, (0, 0), sigma))
    assert blurred.codes == ["blurred"], blurred.problems
    assert blurred.sharpness is not None and original.sharpness is not None
    assert blurred.sharpness < original.sharpness / 3


@pytest.mark.parametrize("rel", SPOIL_FROM)
def test_a_face_far_from_the_camera_is_too_small(rel: str, faces: Path, face_engine: FaceEngine) -> None:
    photo = _photo(faces, rel)
    original = assess(face_engine, photo)
    tiny = assess(face_engine, resize(photo, 45 / original.face_px))
    assert "too_small" in tiny.codes, tiny.problems
    small = next(p for p in tiny.problems if p.code == "too_small")
    assert small.values["face_px"] < small.values["min_px"] == QualitySettings().min_face_px


def test_two_faces_side_by_side(faces: Path, face_engine: FaceEngine) -> None:
    left = _photo(faces, "lfw_dev/Bill_Clinton/Bill_Clinton_0006.jpg")
    right = _photo(faces, "lfw_dev/Alvaro_Uribe/Alvaro_Uribe_0007.jpg")
    report = assess(face_engine, np.ascontiguousarray(np.concatenate([left, right], axis=1)))
    assert report.codes == ["several_faces"] and report.problems[0].values["faces"] >= 2
    group = assess(face_engine, _photo(faces, f"{EX}/_multi_person/two_people.jpg"))
    assert group.codes == ["several_faces"]


def test_no_face(faces: Path, face_engine: FaceEngine) -> None:
    obama = _photo(faces, f"{EX}/obama/obama.jpg")
    suit = np.ascontiguousarray(obama[obama.shape[0] // 2 :])  # the lower half: a suit and a desk, no face
    report = assess(face_engine, suit)
    assert report.codes == ["no_face"] and report.faces == 0 and report.box is None


@pytest.mark.parametrize("rel", ["lfw_dev/Hu_Jintao/Hu_Jintao_0015.jpg", "lfw_dev/Kim_Yong-il/Kim_Yong-il_0002.jpg"])
def test_closed_eyes_are_refused(rel: str, faces: Path, face_engine: FaceEngine) -> None:
    """Real news photos of men looking down with their eyes (almost) shut."""
    report = assess(face_engine, _photo(faces, rel))
    assert report.codes == ["eyes_closed"], report.problems
    assert report.ear is not None and report.ear < QualitySettings().min_eye_openness


def test_a_turned_head_is_not_frontal(faces: Path, face_engine: FaceEngine) -> None:
    """The Intel head-pose clip: she starts looking far to the side, then faces the camera."""
    clip = Capture(str(faces / "videos/intel_sample_videos/head-pose-face-detection-female.gif"))
    frames = []
    while (frame := clip.read()) is not None:
        frames.append(frame)
    clip.release()
    assert len(frames) > 20
    turned = assess(face_engine, resize(frames[0], 2.0))
    assert "not_frontal" in turned.codes, turned.problems
    frontal = assess(face_engine, resize(frames[9], 2.0))
    assert "not_frontal" not in frontal.codes and frontal.yaw is not None and turned.yaw is not None
    assert abs(turned.yaw) > QualitySettings().max_yaw > abs(frontal.yaw)


def test_settings_are_bounded_and_strict() -> None:
    with pytest.raises(ValidationError):
        QualitySettings(min_face_px=5)
    with pytest.raises(ValidationError):
        QualitySettings(min_brightnes=10)  # type: ignore[call-arg]  (a misspelt key is an error)
    with pytest.raises(ValidationError, match="max_brightness"):
        QualitySettings(min_brightness=150, max_brightness=100)
    assert all(f.description for f in QualitySettings.model_fields.values())


def test_every_code_has_a_sentence_in_both_languages() -> None:
    en, zh = translator("en"), translator("zh_CN")
    values = {"faces": 3, "face_px": 41, "min_px": 60, "megapixels": 40, "megabytes": 30}
    for code in CODES + ("unreadable_image", "image_too_large"):
        assert code in PROBLEMS
        english = problem_message(Problem(code, values), en)
        chinese = problem_message(Problem(code, values), zh)
        assert english and chinese and english != chinese, code
        assert "%(" not in english and "%(" not in chinese
    assert "41" in problem_message(Problem("too_small", {"face_px": 41, "min_px": 60}), zh)
    assert problem_message(Problem("several_faces", {"faces": 2}), en).startswith("2 faces are in the picture")
    # An unknown code is named rather than dropped.
    assert "mystery" in problem_message(Problem("mystery"), en)
