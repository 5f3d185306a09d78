"""The frame pipeline with the real dlib models on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from core.matcher import Gallery
from edge.config import DetectionConfig
from edge.gallery import GalleryHolder
from edge.pipeline import FramePipeline

pytestmark = [pytest.mark.faces, pytest.mark.models]


@pytest.fixture(scope="module")
def obama_only(face_engine, photos) -> Gallery:  # noqa: ANN001
    vec, _box = face_engine.encode_single(photos["obama"])
    return Gallery([("obama", vec)], version=1)


def test_obama2_matches_the_enrolled_obama(face_engine, photos, obama_only) -> None:  # noqa: ANN001
    pipeline = FramePipeline(face_engine, DetectionConfig(), GalleryHolder(obama_only))
    obs = pipeline.process(photos["obama2"])
    assert obs is not None
    assert obs.match.identity == "obama" and obs.match.distance < 0.5
    assert obs.face_px >= 60 and obs.face_px == pipeline.last_box.size
    assert pipeline.encodings_computed == 1


def test_biden_is_not_obama(face_engine, photos, obama_only) -> None:  # noqa: ANN001
    pipeline = FramePipeline(face_engine, DetectionConfig())
    obs = pipeline.process(photos["biden"], gallery=obama_only)
    assert obs is not None and obs.match.distance > 0.6  # nearest is obama, but far: the policy will not vote


def test_the_runner_up_is_another_person(face_engine, photos) -> None:  # noqa: ANN001
    biden_vec, _ = face_engine.encode_single(photos["biden"])
    both = Gallery([("obama", face_engine.encode_single(photos["obama"])[0]), ("biden", biden_vec)])
    obs = FramePipeline(face_engine, DetectionConfig()).process(photos["obama2"], gallery=both)
    assert obs is not None
    assert obs.match.identity == "obama" and obs.match.second_identity == "biden"
    assert obs.match.margin > 0.3


def test_a_gallery_swap_is_seen_by_the_next_frame(face_engine, photos, obama_only) -> None:  # noqa: ANN001
    holder = GalleryHolder()
    pipeline = FramePipeline(face_engine, DetectionConfig(), holder)
    empty = pipeline.process(photos["obama2"])
    assert empty is not None and empty.match.identity is None  # a face, nobody to match
    assert pipeline.encodings_computed == 0  # nothing encoded against an empty gallery
    holder.swap(obama_only, {"obama": "Barack Obama"})
    assert pipeline.process(photos["obama2"]).match.identity == "obama"


def test_faces_below_min_face_px_are_not_used(face_engine, photos, obama_only) -> None:  # noqa: ANN001
    # obama_small.jpg is 320x240 with a face of ~140 px: fine at 60, too small at 200.
    found = FramePipeline(face_engine, DetectionConfig(scale=1.0, min_face_px=60)).process(photos["obama_small"], obama_only)
    assert found is not None and 60 <= found.face_px < 200
    pipeline = FramePipeline(face_engine, DetectionConfig(scale=1.0, min_face_px=200))
    assert pipeline.process(photos["obama_small"], obama_only) is None
    assert pipeline.encodings_computed == 0


def test_the_largest_face_of_a_group_is_the_one_matched(face_engine, photos, obama_only) -> None:  # noqa: ANN001
    # The photo is searched at its own resolution (target_width 0), as face_engine.detect does here.
    pipeline = FramePipeline(face_engine, DetectionConfig(scale=1.0, min_face_px=20, target_width=0))
    boxes = face_engine.detect(photos["two_people"])
    assert len(boxes) == 2
    obs = pipeline.process(photos["two_people"], obama_only)
    assert obs is not None and obs.face_px == max(b.size for b in boxes)
    assert pipeline.encodings_computed == 1  # only that face was encoded


def test_a_frame_without_a_face_gives_none(face_engine, obama_only) -> None:  # noqa: ANN001
    blank = np.full((360, 640, 3), 128, np.uint8)
    assert FramePipeline(face_engine, DetectionConfig()).process(blank, obama_only) is None
