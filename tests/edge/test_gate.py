"""The door gate: policy verdicts and liveness combined, pure (synthetic matches and landmarks, a fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from core.faces import Box
from core.matcher import NO_MATCH, Match
from edge.gate import FULL_RATE_S, SLOW_EVERY, DoorGate
from edge.liveness import LivenessConfig
from edge.policy import Observation, PolicyConfig, Verdict
from edge.tracker import FaceFrame
from models.messages import Decision

FPS = 10.0
FRAME = (480, 640)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def face_points(turn: float = 0.0, x: float = 320.0, y: float = 200.0, px: float = 100.0) -> np.ndarray:
    """68 landmarks of a frontal face (eyes 1 unit apart, ``px`` pixels per unit); ``turn`` moves the
    nose sideways against eyes and mouth, as a head turning does (a photo cannot)."""
    pts = np.zeros((68, 2))
    pts[0:17] = np.column_stack([np.linspace(-0.9, 0.9, 17), 0.6 + 0.6 * np.sin(np.linspace(0, np.pi, 17))])
    pts[17:27] = np.column_stack([np.linspace(-0.8, 0.8, 10), np.full(10, -0.35)])
    pts[27:36] = np.column_stack([np.linspace(-0.15, 0.15, 9) + turn, np.linspace(0.1, 0.6, 9)])
    eye = np.array([[-0.2, 0], [-0.07, -0.06], [0.07, -0.06], [0.2, 0], [0.07, 0.06], [-0.07, 0.06]])
    pts[36:42] = eye + [-0.5, 0]
    pts[42:48] = eye + [0.5, 0]
    pts[48:68] = np.column_stack([0.4 * np.cos(np.linspace(0, 2 * np.pi, 20)), 0.95 + 0.08 * np.sin(np.linspace(0, 2 * np.pi, 20))])
    pts[48], pts[54] = [-0.4, 0.95], [0.4, 0.95]
    return pts * px + [x, y]


def box_of(pts: np.ndarray) -> Box:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return Box(int(lo[1]), int(hi[0]), int(hi[1]), int(lo[0]))


def match(identity: str | None, distance: float, second: float = 0.9) -> Match:
    if identity is None:
        return Match("someone", distance, "other", second)
    return Match(identity, distance, "other", second)


def seen(m: Match | None, pts: np.ndarray | None = None, landmarks: bool = True) -> FaceFrame:
    """One frame's followed face: encoded (``m``) or not (None), with landmarks."""
    pts = face_points() if pts is None else pts
    b = box_of(pts)
    obs = None if m is None else Observation(face_px=b.size, match=m)
    return FaceFrame(b, 1, False, obs, pts if landmarks else None, FRAME)


def make(mode: str = "either", **policy: object) -> tuple[DoorGate, Clock]:
    clock = Clock()
    cfg = {"threshold": 0.5, "margin": 0.06, "min_face_px": 60, "frames_required": 3, "deny_after_frames": 6,
           "visit_gap_s": 1.5, "cooldown_s": 30.0} | policy
    return DoorGate(PolicyConfig(**cfg), LivenessConfig(mode=mode), clock), clock  # type: ignore[arg-type]


def feed(gate: DoorGate, clock: Clock, frames: list[FaceFrame | None]) -> list[tuple[float, Verdict]]:
    """Frames at FPS; the verdicts with the time they came out."""
    out = []
    for f in frames:
        if f is not None and f.observation is not None and not gate.wants_encoding:
            f = FaceFrame(f.box, f.track_id, f.new_track, None, f.landmarks, f.frame_size)  # the pipeline would not encode
        if f is not None and not gate.wants_landmarks:
            f = FaceFrame(f.box, f.track_id, f.new_track, f.observation, None, f.frame_size)
        v = gate.observe(f)
        if v is not None:
            out.append((clock.t, v))
        clock.t += 1.0 / FPS
    return out


def live_worker(n: int, identity: str = "ana", distance: float = 0.35) -> list[FaceFrame]:
    """A real person: turning the head a little while matched on every frame."""
    return [seen(match(identity, distance), face_points(turn=0.25 * np.sin(i / 3.0))) for i in range(n)]


def photo(n: int, identity: str = "ana", distance: float = 0.35, jitter: float = 0.0) -> list[FaceFrame]:
    """A photo held to the camera: matched, but its landmarks only shift as a whole."""
    return [seen(match(identity, distance), face_points(x=320 + jitter * np.sin(i), y=200 + jitter * np.cos(i))) for i in range(n)]


# --------------------------------------------------------------------------- liveness off


def test_with_liveness_off_the_policy_grant_opens_the_door_at_once() -> None:
    gate, clock = make("off")
    start = clock.t
    verdicts = feed(gate, clock, photo(5))
    assert len(verdicts) == 1
    t, v = verdicts[0]
    assert v.decision == Decision.GRANTED and v.identity == "ana" and v.open_door and v.record
    assert v.reason == "matched" and v.frames == 3
    assert t == pytest.approx(start + 2 / FPS) and v.visit_started_at == pytest.approx(start)
    assert not gate.wants_landmarks  # nothing to compute for liveness


# --------------------------------------------------------------------------- liveness on


def test_a_live_worker_is_let_in_once_liveness_has_passed() -> None:
    gate, clock = make()
    start = clock.t
    verdicts = feed(gate, clock, live_worker(40))
    assert [v.decision for _, v in verdicts] == [Decision.GRANTED]
    t, v = verdicts[0]
    assert v.open_door and v.record and v.identity == "ana"
    assert v.reason.startswith("matched; live: head movement")
    assert v.decided_at == pytest.approx(t) and v.visit_started_at == pytest.approx(start)
    assert t > start + 2 / FPS  # the policy's third frame was not enough: liveness needed its frames too
    assert v.elapsed_s < 4.0
    assert gate.held is None and not gate.wants_encoding and not gate.wants_landmarks


def test_a_photo_of_a_worker_is_a_spoof_at_the_time_limit_and_never_opens_the_door() -> None:
    gate, clock = make()
    start = clock.t
    verdicts = feed(gate, clock, photo(80, jitter=3.0))
    assert [v.decision for _, v in verdicts] == [Decision.SPOOF]
    t, v = verdicts[0]
    assert not v.open_door and v.record
    assert v.identity == "ana"  # whose photo it was: worth knowing
    assert v.reason.startswith("liveness failed: no blink or head movement within 4 s")
    assert t == pytest.approx(start + 4.0, abs=0.11)
    assert gate.spoofs == 1 and not gate.wants_encoding


def test_while_liveness_is_pending_the_grant_is_held_and_encoding_stops() -> None:
    gate, clock = make()
    feed(gate, clock, photo(3))
    held = gate.held
    assert held is not None and held.decision == Decision.GRANTED and held.identity == "ana"
    assert not gate.wants_encoding  # the worker is known: only liveness is still open
    assert gate.wants_landmarks


def test_a_denial_goes_out_at_once_whatever_liveness_says() -> None:
    gate, clock = make()
    start = clock.t
    stranger = [seen(match(None, 0.7)) for _ in range(6)]
    verdicts = feed(gate, clock, stranger)
    assert [v.decision for _, v in verdicts] == [Decision.DENIED]
    assert verdicts[0][0] == pytest.approx(start + 5 / FPS)
    assert verdicts[0][1].reason == "unknown face" and not verdicts[0][1].open_door


def test_a_strangers_photo_is_denied_and_not_also_called_a_spoof() -> None:
    gate, clock = make()
    verdicts = feed(gate, clock, photo(60, identity="x", distance=0.75))
    assert [v.decision for _, v in verdicts] == [Decision.DENIED]
    assert gate.liveness_result is not None and gate.liveness_result.failed  # it did fail; nothing to record


def test_a_grant_after_liveness_already_failed_is_a_spoof_on_the_spot() -> None:
    gate, clock = make()
    blurred = [seen(match(None, 0.7)) for _ in range(45)]  # 4.5 s of a photo that matches nobody yet
    out = feed(gate, clock, blurred)
    assert [v.decision for _, v in out] == [Decision.DENIED]
    assert gate.liveness_result is not None and gate.liveness_result.failed
    # Now it matches (the face is encoded on every third frame by now: a long visit).
    out = feed(gate, clock, photo(3 * SLOW_EVERY))
    assert [v.decision for _, v in out] == [Decision.SPOOF]
    assert out[0][1].frames == 3 and out[0][1].identity == "ana"


def test_a_denied_visit_can_still_be_granted_to_a_live_worker() -> None:
    gate, clock = make()
    frames = [seen(match("ana", 0.58), face_points(turn=0.25 * np.sin(i / 3.0))) for i in range(6)] + live_worker(20)[6:]
    out = feed(gate, clock, frames)
    assert [v.decision for _, v in out] == [Decision.DENIED, Decision.GRANTED]
    assert out[1][1].visit_started_at == out[0][1].visit_started_at  # one visit


def test_a_grant_held_when_the_person_leaves_is_dropped_and_the_next_visit_starts_afresh() -> None:
    gate, clock = make()
    out = feed(gate, clock, photo(10) + [None] * 16)  # 1 s of a photo, then gone for 1.6 s (> visit_gap_s)
    assert out == [] and gate.held is None and gate.abandoned == 1
    start = clock.t
    out = feed(gate, clock, live_worker(40))
    assert [v.decision for _, v in out] == [Decision.GRANTED]
    assert out[0][1].visit_started_at == pytest.approx(start)  # a new visit, a new liveness time limit


# --------------------------------------------------------------------------- visits, encoding and cooldown


def test_one_grant_per_visit_while_the_worker_stands_there_without_being_encoded() -> None:
    gate, clock = make("off")
    out = feed(gate, clock, photo(3))
    assert len(out) == 1 and not gate.wants_encoding
    # 10 s more at the door: the pipeline only follows the face (no encodings); the visit stays open.
    out = feed(gate, clock, [seen(None) for _ in range(100)])
    assert out == [] and gate.policy.in_visit
    # Gone for 2 s, then back: a new visit, let in again, but within the cooldown: not a new entry.
    out = feed(gate, clock, [None] * 20 + photo(3))
    assert len(out) == 1 and out[0][1].open_door and not out[0][1].record


def encoding_plan(gate: DoorGate, clock: Clock, distance: float, frames: int) -> tuple[list[bool], list[tuple[float, Verdict]]]:
    """Which frames the gate asks to have encoded while one face at ``distance`` stays; and the verdicts."""
    asked, verdicts = [], []
    for _ in range(frames):
        asked.append(gate.wants_encoding)
        v = gate.observe(seen(match("ana", distance) if asked[-1] else None))
        if v is not None:
            verdicts.append((clock.t, v))
        clock.t += 1.0 / FPS
    return asked, verdicts


def test_a_face_near_a_worker_is_encoded_on_every_frame_for_a_while() -> None:
    gate, clock = make("off")  # threshold 0.5: 0.55 is a near miss, maybe a worker with a poor first look
    asked, verdicts = encoding_plan(gate, clock, 0.55, int(FULL_RATE_S * FPS) + 6 * SLOW_EVERY)
    full = int(FULL_RATE_S * FPS)
    assert all(asked[:full])
    assert sum(asked[full + 1 :]) == pytest.approx(len(asked[full + 1 :]) / SLOW_EVERY, abs=1)  # then it slows down
    assert [v.decision for _, v in verdicts] == [Decision.DENIED]
    feed(gate, clock, [None] * 20)  # gone: the next visit starts at full rate
    assert gate.wants_encoding and not gate.policy.in_visit


def test_a_stranger_is_encoded_rarely_and_denied_as_soon_as_ever() -> None:
    gate, clock = make("off")
    start = clock.t
    asked, verdicts = encoding_plan(gate, clock, 0.85, 30)
    assert asked[0] and sum(asked) <= 30 / SLOW_EVERY + 1
    # The frames in between count as seen (copies of the far match, which cannot vote): the
    # denial comes on the 6th frame, as when every frame is encoded.
    assert [v.decision for _, v in verdicts] == [Decision.DENIED]
    assert verdicts[0][0] == pytest.approx(start + 5 / FPS) and verdicts[0][1].reason == "unknown face"


def test_a_copy_of_a_near_match_is_never_given_to_the_policy() -> None:
    gate, clock = make("off")
    gate.observe(seen(match("ana", 0.45)))  # one vote
    clock.t += 0.1
    for _ in range(20):  # followed, not encoded (as if the pipeline had not been asked): no votes from copies
        assert gate.observe(seen(None)) is None
        clock.t += 0.1
    assert gate.held is None and not gate.policy.in_visit  # nothing reached the policy: the visit even lapsed


def test_an_empty_gallery_observation_counts_as_seen_but_never_grants() -> None:
    gate, clock = make("off")
    frames = [FaceFrame(box_of(face_points()), 1, False, Observation(face_px=150, match=NO_MATCH), None, FRAME)] * 8
    out = feed(gate, clock, frames)
    assert [v.decision for _, v in out] == [Decision.DENIED]


def test_after_a_spoof_the_workers_real_entry_is_recorded_despite_the_cooldown() -> None:
    gate, clock = make()
    out = feed(gate, clock, photo(45))
    assert [v.decision for _, v in out] == [Decision.SPOOF]
    feed(gate, clock, [None] * 20)  # the photo goes away; the policy's cooldown started at its grant
    out = feed(gate, clock, live_worker(40))
    assert [v.decision for _, v in out] == [Decision.GRANTED]
    v = out[0][1]
    assert v.record and v.reason.startswith("matched; live")
    # ...and the cooldown applies normally after that real entry.
    feed(gate, clock, [None] * 20)
    out = feed(gate, clock, live_worker(40))
    assert len(out) == 1 and out[0][1].open_door and not out[0][1].record
