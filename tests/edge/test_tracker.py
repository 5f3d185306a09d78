"""The tracker and the motion gate: pure geometry on boxes and thumbnails, no models."""

from __future__ import annotations

import numpy as np
import pytest

from core.faces import Box
from edge.tracker import SWITCH_RATIO, FaceTracker, MotionGate, expand, iou, same_face


def box(x: int, y: int, size: int) -> Box:
    """A square face of ``size`` px whose top-left corner is at (x, y)."""
    return Box(top=y, right=x + size, bottom=y + size, left=x)


# --------------------------------------------------------------------------- geometry


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    a = box(0, 0, 100)
    assert iou(a, a) == 1.0
    assert iou(a, box(200, 0, 100)) == 0.0
    assert iou(a, box(100, 0, 100)) == 0.0  # touching edges share no area
    assert iou(a, box(50, 0, 100)) == pytest.approx(50 * 100 / (2 * 100 * 100 - 50 * 100))


def test_same_face_allows_a_step_and_refuses_a_jump_or_a_new_size() -> None:
    a = box(100, 100, 100)
    assert same_face(a, box(130, 110, 100))  # moved a third of a face: overlapping
    assert same_face(a, box(140, 100, 110))
    assert not same_face(a, box(260, 100, 100))  # 1.6 face sizes away: someone else
    assert not same_face(a, box(100, 100, 40))  # same place, a much smaller face behind


def test_expand_grows_by_face_sizes_and_stays_inside_the_frame() -> None:
    assert expand(box(100, 100, 100), 0.5, 480, 640) == Box(50, 250, 250, 50)
    assert expand(box(10, 400, 100), 0.75, 480, 640) == Box(325, 185, 480, 0)


# --------------------------------------------------------------------------- the tracker


def test_a_followed_face_is_searched_for_around_its_last_box() -> None:
    tracker = FaceTracker(roi_margin=0.75, roi_face_px=100, rescan_s=0.5)
    assert tracker.search_region(0.0, 480, 640) is None  # nothing followed: search everything
    face = box(200, 100, 200)
    assert tracker.update([face], 0.0, full=True) == (face, 1, True)
    region, scale = tracker.search_region(0.04, 480, 640)
    assert region == Box(0, 550, 450, 50)
    assert scale == 0.5  # a 200 px face is searched at half size: ~100 px, enough for HOG
    moved = box(220, 110, 190)
    assert tracker.update([moved], 0.04, full=False) == (moved, 1, False)
    assert tracker.following == moved


def test_small_faces_are_never_searched_for_above_full_size() -> None:
    tracker = FaceTracker(roi_face_px=100)
    tracker.update([box(200, 100, 80)], 0.0, full=True)
    _region, scale = tracker.search_region(0.04, 480, 640)
    assert scale == 1.0


def test_the_whole_frame_is_searched_again_every_rescan_s() -> None:
    tracker = FaceTracker(rescan_s=0.5)
    face = box(200, 100, 120)
    tracker.update([face], 10.0, full=True)
    t = 10.0
    while t < 10.45:
        t += 0.04
        assert tracker.search_region(t, 480, 640) is not None
        tracker.update([face], t, full=False)
    assert tracker.search_region(10.5, 480, 640) is None  # rescan due
    tracker.update([face], 10.5, full=True)
    assert tracker.search_region(10.54, 480, 640) is not None


def test_after_a_miss_the_whole_frame_is_searched_and_the_face_is_kept_a_while() -> None:
    tracker = FaceTracker()
    face = box(200, 100, 120)
    tracker.update([face], 0.0, full=True)
    assert tracker.update([], 0.04, full=False) is None
    assert tracker.search_region(0.08, 480, 640) is None  # not confirmed on the last frame
    assert tracker.update([box(205, 100, 120)], 0.3, full=True)[1:] == (1, False)  # the same face, still track 1
    assert tracker.update([], 0.34, full=True) is None
    assert tracker.update([box(205, 100, 120)], 0.9, full=True)[1:] == (2, True)  # gone > 0.5 s: a new visitor


def test_a_clearly_larger_face_takes_over_only_on_a_whole_frame_search() -> None:
    tracker = FaceTracker()
    near = box(100, 100, 120)
    tracker.update([near], 0.0, full=True)
    similar = box(400, 100, 140)  # 1.17x: two people side by side, no flapping
    assert tracker.update([near, similar], 0.04, full=True) == (near, 1, False)
    closer = box(380, 80, 160)  # 1.33x: someone stepped in front
    assert tracker.update([closer, near], 0.08, full=False) == (near, 1, False)  # a region search sees only its region
    assert tracker.update([near, closer], 0.12, full=True) == (closer, 2, True)
    assert tracker.switches == 1


def test_a_face_elsewhere_starts_a_new_track() -> None:
    tracker = FaceTracker()
    tracker.update([box(50, 50, 100)], 0.0, full=True)
    other = box(450, 300, 100)
    assert tracker.update([other], 0.04, full=True) == (other, 2, True)


def test_time_running_backwards_means_a_new_clip_and_a_whole_frame_search() -> None:
    tracker = FaceTracker()
    tracker.update([box(200, 100, 120)], 5.0, full=True)
    assert tracker.search_region(0.0, 480, 640) is None


def test_the_region_around_the_face_is_known_even_when_a_rescan_is_due() -> None:
    tracker = FaceTracker(rescan_s=0.5)
    assert tracker.rescan_due(0.0) is True  # never searched the whole frame
    face = box(200, 100, 120)
    tracker.update([face], 10.0, full=True)
    assert tracker.rescan_due(10.2) is False
    assert tracker.followed_region(10.2, 480, 640) == tracker.search_region(10.2, 480, 640)
    assert tracker.rescan_due(10.5) is True
    assert tracker.search_region(10.5, 480, 640) is None
    region, scale = tracker.followed_region(10.5, 480, 640)  # a rescan can still look around the face first
    assert region == Box(10, 410, 310, 110) and scale == pytest.approx(100 / 120)
    assert tracker.rescan_due(9.0) is True  # time ran backwards: a new clip
    assert tracker.followed_region(9.0, 480, 640) is None
    tracker.update([], 10.54, full=False)
    assert tracker.followed_region(10.58, 480, 640) is None  # missed on the last frame: nothing to look around


def test_only_a_clearly_larger_face_takes_over() -> None:
    followed = box(100, 100, 100)
    assert FaceTracker.takes_over(box(300, 100, 125), followed) is True
    assert FaceTracker.takes_over(box(300, 100, 124), followed) is False
    assert SWITCH_RATIO == 1.25


# --------------------------------------------------------------------------- the motion gate


def thumb(value: int = 100) -> np.ndarray:
    return np.full((45, 80), value, np.uint8)


def test_scene_cuts_are_reported_against_the_previous_frame() -> None:
    gate = MotionGate(0.002)
    assert gate.see(thumb()) is True  # nothing to compare with: treat as a cut
    assert gate.see(thumb()) is False
    noisy = thumb()
    noisy[::2, ::2] += 10  # sensor noise below the cell threshold
    assert gate.see(noisy) is False
    assert gate.see(thumb(200)) is True


def test_an_unchanged_empty_scene_is_not_searched_again() -> None:
    gate = MotionGate(0.002)
    assert gate.idle_change(thumb()) == (0.0, 0.0, 1.0, 1.0)  # never searched: search everything
    gate.searched(thumb())
    assert gate.idle_change(thumb()) is None
    walking_in = thumb()
    walking_in[9:27, 40:60] = 180  # someone entering on the right
    assert gate.idle_change(walking_in) == pytest.approx((9 / 45, 40 / 80, 27 / 45, 60 / 80))


def test_a_gate_with_fraction_zero_always_searches_everything() -> None:
    gate = MotionGate(0.0)
    gate.searched(thumb())
    assert gate.idle_change(thumb()) == (0.0, 0.0, 1.0, 1.0)


def test_still_looks_only_inside_the_region_since_the_last_detection() -> None:
    gate = MotionGate(0.002)
    assert gate.still(thumb(), 0.1, 0.1, 0.5, 0.5) is False  # no detection yet
    gate.detected(thumb())
    assert gate.still(thumb(), 0.1, 0.1, 0.5, 0.5) is True
    elsewhere = thumb()
    elsewhere[40:45, 70:80] = 255
    assert gate.still(elsewhere, 0.1, 0.1, 0.5, 0.5) is True
    inside = thumb()
    inside[10, 10] = 0
    assert gate.still(inside, 0.1, 0.1, 0.5, 0.5) is False


def test_a_face_missed_on_the_last_frame_is_still_followed_but_no_longer_confirmed() -> None:
    # The pipeline then searches as for an empty scene (edge/pipeline.py): the face left or turned away.
    tracker = FaceTracker(rescan_s=0.5)
    assert not tracker.confirmed  # nothing followed
    face = box(200, 100, 120)
    tracker.update([face], 0.0, full=True)
    assert tracker.confirmed
    assert tracker.update([], 0.04, full=True) is None
    assert tracker.following == face and not tracker.confirmed
    assert tracker.followed_region(0.08, 480, 640) is None  # no region to search around an unconfirmed face
    assert tracker.update([box(205, 100, 120)], 0.08, full=True) == (box(205, 100, 120), 1, False)  # same track
    assert tracker.confirmed
