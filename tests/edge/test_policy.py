"""The door-decision policy, pure: a fake clock, hand-made matches, no models, pins or broker."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.matcher import NO_MATCH, Match
from edge.policy import (
    REASON_AMBIGUOUS,
    REASON_INCONSISTENT,
    REASON_MATCHED,
    REASON_UNKNOWN,
    DecisionPolicy,
    Observation,
    PolicyConfig,
    Verdict,
)
from models.messages import Decision

INF = math.inf


class FakeClock:
    """A plain mutable float standing in for time.monotonic."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def face(identity: str | None, distance: float, second: str | None = None, second_distance: float = INF, px: int = 120) -> Observation:
    return Observation(face_px=px, match=Match(identity, distance, second, second_distance))


ALICE = face("alice", 0.30, "bob", 0.70)
BOB = face("bob", 0.32, "alice", 0.71)
STRANGER = face("alice", 0.72, "bob", 0.80)


def make(**overrides: float) -> tuple[DecisionPolicy, FakeClock]:
    clock = FakeClock()
    return DecisionPolicy(PolicyConfig(**overrides), clock), clock


def feed(policy: DecisionPolicy, clock: FakeClock, observations: list[Observation | None], dt: float = 0.1) -> list[Verdict]:
    out = []
    for obs in observations:
        verdict = policy.observe(obs)
        if verdict is not None:
            out.append(verdict)
        clock.t += dt
    return out


def test_k_agreeing_frames_grant_on_the_kth_with_the_visit_timing() -> None:
    policy, clock = make()
    start = clock.t
    assert policy.observe(face("alice", 0.35, "bob", 0.7)) is None
    clock.t += 0.1
    assert policy.observe(face("alice", 0.28, "bob", 0.69)) is None
    clock.t += 0.1
    verdict = policy.observe(face("alice", 0.31, "bob", 0.72, px=140))
    assert verdict is not None
    assert verdict.decision is Decision.GRANTED and verdict.identity == "alice"
    assert verdict.open_door and verdict.record and verdict.reason == REASON_MATCHED
    assert verdict.frames == 3
    assert verdict.distance == pytest.approx(0.28) and verdict.second_distance == pytest.approx(0.69)
    assert verdict.visit_started_at == start
    assert verdict.decided_at == pytest.approx(start + 0.2)
    assert verdict.elapsed_s == pytest.approx(0.2)
    assert verdict.face_px == 140


def test_a_single_lucky_frame_never_grants() -> None:
    policy, clock = make()
    verdicts = feed(policy, clock, [ALICE, None, None, None], dt=0.6)  # the visit ends after 1.5 s without a face
    verdicts += feed(policy, clock, [STRANGER, ALICE, STRANGER, STRANGER, STRANGER])
    assert all(v.decision is not Decision.GRANTED for v in verdicts)


def test_two_of_three_frames_are_not_enough() -> None:
    policy, clock = make(frames_required=3)
    assert feed(policy, clock, [ALICE, ALICE]) == []


def test_frames_required_one_grants_on_one_frame() -> None:
    policy, clock = make(frames_required=1)
    [verdict] = feed(policy, clock, [ALICE])
    assert verdict.decision is Decision.GRANTED and verdict.frames == 1


@pytest.mark.parametrize(("dt", "granted"), [(1.2, False), (0.9, True)])
def test_the_k_frames_must_fall_within_the_window(dt: float, granted: bool) -> None:
    # window 2 s: three frames 1.2 s apart span 2.4 s (too slow), 0.9 s apart span 1.8 s.
    policy, clock = make(window_s=2.0, deny_after_frames=1000)
    verdicts = feed(policy, clock, [ALICE] * 6, dt=dt)
    assert any(v.decision is Decision.GRANTED for v in verdicts) is granted


def test_alternating_identities_never_grant_and_are_denied_as_inconsistent() -> None:
    policy, clock = make()
    verdicts = feed(policy, clock, [ALICE, BOB] * 20, dt=0.05)
    assert [v.decision for v in verdicts] == [Decision.DENIED]
    assert verdicts[0].identity is None and verdicts[0].reason == REASON_INCONSISTENT
    assert not verdicts[0].open_door


def test_a_conflicting_vote_restarts_the_run() -> None:
    policy, clock = make(deny_after_frames=1000)
    assert feed(policy, clock, [ALICE, ALICE, BOB, ALICE, ALICE]) == []
    [verdict] = feed(policy, clock, [ALICE])
    assert verdict.identity == "alice" and verdict.frames == 3


def test_abstaining_frames_neither_count_nor_break_the_run() -> None:
    policy, clock = make(deny_after_frames=1000)
    verdicts = feed(policy, clock, [ALICE, STRANGER, ALICE, STRANGER, ALICE])
    assert [v.identity for v in verdicts] == ["alice"]


def test_ties_between_two_workers_are_refused() -> None:
    policy, clock = make(margin=0.06)
    tie = face("alice", 0.30, "bob", 0.33)  # margin 0.03 < 0.06
    verdicts = feed(policy, clock, [tie] * 30)
    assert [v.decision for v in verdicts] == [Decision.DENIED]
    assert verdicts[0].reason == REASON_AMBIGUOUS
    assert not verdicts[0].open_door


def test_a_clear_margin_votes() -> None:
    policy, clock = make(threshold=0.5, margin=0.06)
    clear = face("alice", 0.30, "bob", 0.37)
    assert policy.vote(clear.match) == "alice"
    assert policy.vote(face("alice", 0.30, "bob", 0.33).match) is None
    assert policy.vote(face("alice", 0.51, "bob", 0.9).match) is None  # over the threshold 0.5
    assert policy.vote(face("alice", 0.2).match) == "alice"  # only one enrolled identity: no runner-up
    assert policy.vote(NO_MATCH) is None


def test_small_faces_are_ignored_entirely() -> None:
    policy, clock = make(min_face_px=60)
    small = face("alice", 0.2, "bob", 0.8, px=59)
    assert feed(policy, clock, [small] * 50) == []
    assert not policy.in_visit


def test_small_faces_do_not_keep_a_visit_open() -> None:
    policy, clock = make(min_face_px=60, visit_gap_s=1.5)
    small = face("alice", 0.2, "bob", 0.8, px=40)
    assert feed(policy, clock, [ALICE, ALICE]) == []
    feed(policy, clock, [small] * 20)  # 2 s of faces too small to count: the visit ends
    [verdict] = feed(policy, clock, [ALICE, ALICE, ALICE])
    assert verdict.frames == 3 and verdict.visit_started_at > 1001.0


def test_one_grant_per_visit_while_the_person_stands_there() -> None:
    policy, clock = make()
    verdicts = feed(policy, clock, [ALICE] * 100)
    assert len(verdicts) == 1 and verdicts[0].decision is Decision.GRANTED


def test_no_denial_after_a_grant_in_the_same_visit() -> None:
    policy, clock = make()
    verdicts = feed(policy, clock, [ALICE] * 3 + [STRANGER] * 40)
    assert [v.decision for v in verdicts] == [Decision.GRANTED]


def test_frames_without_a_face_within_the_gap_keep_the_visit() -> None:
    policy, clock = make(visit_gap_s=1.5)
    verdicts = feed(policy, clock, [ALICE] * 3 + [None] * 10 + [ALICE] * 10)  # 1.0 s without a face
    assert len(verdicts) == 1


def test_a_visit_gap_starts_a_new_visit() -> None:
    policy, clock = make(visit_gap_s=1.5, cooldown_s=0)
    first = feed(policy, clock, [ALICE] * 5)
    feed(policy, clock, [None] * 16)  # 1.6 s without a face
    second = feed(policy, clock, [ALICE] * 5)
    assert len(first) == 1 and len(second) == 1
    assert second[0].visit_started_at > first[0].decided_at + 1.5
    assert second[0].record


def test_cooldown_opens_the_door_without_a_new_entry() -> None:
    policy, clock = make(cooldown_s=30, visit_gap_s=1.5)
    [first] = feed(policy, clock, [ALICE] * 3)
    clock.t += 10  # new visit, 10 s later
    [repeat] = feed(policy, clock, [ALICE] * 3)
    clock.t += 5
    [other] = feed(policy, clock, [BOB] * 3)
    clock.t = first.decided_at + 31
    [later] = feed(policy, clock, [ALICE] * 3)
    assert first.record and first.open_door
    assert repeat.open_door and not repeat.record and repeat.decision is Decision.GRANTED
    assert other.record  # the cooldown is per worker
    assert later.record and later.open_door


def test_unknown_denials_are_rate_limited_but_the_door_stays_shut() -> None:
    policy, clock = make(unknown_log_interval_s=10, deny_after_frames=6)
    [first] = feed(policy, clock, [STRANGER] * 6)
    clock.t += 3
    [second] = feed(policy, clock, [STRANGER] * 6)
    clock.t = first.decided_at + 10.5
    [third] = feed(policy, clock, [STRANGER] * 6)
    assert first.decision is Decision.DENIED and first.record and first.reason == REASON_UNKNOWN
    assert first.identity is None and first.frames == 6
    assert second.decision is Decision.DENIED and not second.record
    assert third.record
    assert not any(v.open_door for v in (first, second, third))


def test_one_denial_per_visit() -> None:
    policy, clock = make(deny_after_frames=6, unknown_log_interval_s=0)
    verdicts = feed(policy, clock, [STRANGER] * 60)
    assert [v.decision for v in verdicts] == [Decision.DENIED]


def test_deny_then_grant_in_the_same_visit() -> None:
    policy, clock = make(deny_after_frames=6)
    verdicts = feed(policy, clock, [STRANGER] * 8 + [ALICE] * 3 + [STRANGER] * 20)
    assert [v.decision for v in verdicts] == [Decision.DENIED, Decision.GRANTED]
    assert verdicts[0].visit_started_at == verdicts[1].visit_started_at
    assert verdicts[1].identity == "alice" and verdicts[1].open_door


def test_an_empty_gallery_denies_as_unknown_with_no_scores() -> None:
    policy, clock = make()
    [verdict] = feed(policy, clock, [Observation(face_px=100, match=NO_MATCH)] * 6)
    assert verdict.reason == REASON_UNKNOWN and verdict.distance is None and verdict.second_distance is None


def test_denial_reports_the_closest_frame() -> None:
    policy, clock = make()
    [verdict] = feed(policy, clock, [face("alice", d, "bob", 0.9) for d in (0.8, 0.66, 0.9, 0.7, 0.75, 0.95)])
    assert verdict.distance == pytest.approx(0.66)


@pytest.mark.parametrize(
    "bad",
    [{"threshold": 0.9}, {"threshold": 0.1}, {"margin": -0.1}, {"frames_required": 0}, {"frames_required": 31},
     {"window_s": 0}, {"cooldown_s": -1}, {"unknown": 1}],
)
def test_config_is_bounded_and_strict(bad: dict) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig(**bad)


def test_config_is_frozen_and_documented() -> None:
    cfg = PolicyConfig()
    with pytest.raises(ValidationError):
        cfg.threshold = 0.7  # type: ignore[misc]
    assert all(f.description for f in PolicyConfig.model_fields.values())


frames_strategy = st.lists(
    st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["alice", "bob", "carol"]),
            st.floats(0.0, 1.5),
            st.floats(0.0, 1.5),
            st.integers(10, 400),
            st.floats(0.0, 3.0),
        ),
    ),
    max_size=120,
)


def _replay(config: PolicyConfig, frames: list, distance_floor: float = 0.0) -> list[Verdict]:
    clock = FakeClock()
    policy = DecisionPolicy(config, clock)
    out = []
    for item in frames:
        if item is None:
            clock.t += 0.3
            obs = None
        else:
            identity, d, extra, px, dt = item
            clock.t += dt
            d = distance_floor + d
            obs = Observation(px, Match(identity, d, "zed", d + extra))
        verdict = policy.observe(obs)
        if verdict is not None:
            out.append(verdict)
    return out


@settings(max_examples=300, deadline=None)
@given(frames=frames_strategy, threshold=st.floats(0.2, 0.8), k=st.integers(1, 5))
def test_property_nothing_is_granted_when_every_distance_is_over_the_threshold(frames: list, threshold: float, k: int) -> None:
    config = PolicyConfig(threshold=threshold, frames_required=k)
    verdicts = _replay(config, frames, distance_floor=threshold + 1e-6)
    assert all(v.decision is not Decision.GRANTED and not v.open_door for v in verdicts)


@settings(max_examples=300, deadline=None)
@given(frames=frames_strategy, k=st.integers(1, 5))
def test_property_each_visit_has_at_most_one_grant_and_one_denial_in_that_order(frames: list, k: int) -> None:
    verdicts = _replay(PolicyConfig(frames_required=k, cooldown_s=0, unknown_log_interval_s=0), frames)
    by_visit: dict[float, list[Decision]] = {}
    for v in verdicts:
        by_visit.setdefault(v.visit_started_at, []).append(v.decision)
        assert v.open_door == (v.decision is Decision.GRANTED)
        if v.decision is Decision.GRANTED:
            assert v.frames >= k and v.distance is not None and v.distance <= PolicyConfig().threshold
    for decisions in by_visit.values():
        assert decisions in ([Decision.GRANTED], [Decision.DENIED], [Decision.DENIED, Decision.GRANTED])
