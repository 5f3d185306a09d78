"""Two ways in (face and QR credential) meeting in the gate, and the liveness evidence of each verdict; pure
(synthetic matches and landmarks, a fake clock). The same on the real agent: tests/edge/test_one_entry.py."""

from __future__ import annotations

import pytest

from models.messages import Decision
from tests.edge.test_gate import FPS, feed, live_worker, make, photo


def test_a_credential_during_a_visit_keeps_the_face_path_from_granting_the_same_worker() -> None:
    gate, clock = make("off")
    feed(gate, clock, photo(2))  # ana's face: two agreeing frames, one short of a grant
    admit = gate.grant_elsewhere("ana")  # her QR code is read
    assert admit.open_door and admit.record
    out = feed(gate, clock, photo(10))  # her face goes on being seen and matched
    assert out == [] and gate.merged == 1
    assert not gate.wants_encoding  # the visit is decided: nothing left to compute
    # A visit starting within visit_gap_s of the credential is still the same arrival.
    gate2, clock2 = make("off")
    assert gate2.grant_elsewhere("ana").open_door
    clock2.t += 1.0
    assert feed(gate2, clock2, photo(5)) == [] and gate2.merged == 1


def test_a_grant_held_for_liveness_is_dropped_when_a_credential_lets_the_worker_in() -> None:
    gate, clock = make()  # liveness on: a still face keeps the grant held
    feed(gate, clock, photo(5))
    assert gate.held is not None and gate.held.identity == "ana"
    assert gate.grant_elsewhere("ana").open_door
    assert gate.held is None and gate.merged == 1
    out = feed(gate, clock, photo(60))  # past the liveness time limit: no spoof either, the visit was decided
    assert out == [] and gate.spoofs == 0


def test_a_credential_after_the_face_opened_the_door_in_the_same_visit_is_not_a_second_entry() -> None:
    gate, clock = make("off")
    out = feed(gate, clock, photo(5))
    assert [v.decision for _, v in out] == [Decision.GRANTED] and out[0][1].record
    admit = gate.grant_elsewhere("ana")
    assert not admit.open_door and not admit.record and gate.merged == 1
    # She leaves (visit_gap_s passes) and shows the code again within the cooldown: the door opens, no new entry.
    feed(gate, clock, [None] * 20)
    admit = gate.grant_elsewhere("ana")
    assert admit.open_door and not admit.record and "cooldown" in admit.reason


def test_a_credential_for_one_worker_does_not_stop_anothers_face() -> None:
    gate, clock = make("off")
    assert gate.grant_elsewhere("bo").open_door  # bo's code, shown by whoever stands there
    out = feed(gate, clock, photo(5, identity="ana"))
    assert [(v.decision, v.identity, v.record) for _, v in out] == [(Decision.GRANTED, "ana", True)]
    assert gate.merged == 0


def test_the_cooldown_is_shared_by_both_ways_in_and_a_later_visit_opens_again() -> None:
    gate, clock = make("off", cooldown_s=30.0)
    assert gate.grant_elsewhere("ana").record
    clock.t += 10.0  # ten seconds later, a new visit: the door opens for her face, but it is no new entry
    out = feed(gate, clock, photo(5))
    assert [(v.decision, v.open_door, v.record) for _, v in out] == [(Decision.GRANTED, True, False)]
    clock.t += 30.0  # after the cooldown, a credential is an entry again
    feed(gate, clock, [None] * 20)
    assert gate.grant_elsewhere("ana").record


def test_a_credential_after_a_spoof_of_the_same_worker_is_recorded_despite_the_cooldown() -> None:
    gate, clock = make()
    out = feed(gate, clock, photo(45))  # someone holds up ana's photo: a spoof, and her cooldown starts
    assert [v.decision for _, v in out] == [Decision.SPOOF]
    feed(gate, clock, [None] * 20)
    assert gate.grant_elsewhere("ana").record  # then ana herself, with her code: her real entry
    clock.t += 5.0
    assert not gate.grant_elsewhere("ana").record  # and the cooldown applies from there


def test_each_verdict_carries_the_liveness_evidence_it_rests_on() -> None:
    gate, clock = make()
    out = feed(gate, clock, live_worker(40))
    assert [v.decision for _, v in out] == [Decision.GRANTED]
    scores = gate.liveness_scores()
    assert scores["liveness"] == "passed" and scores["blinks"] == 0
    assert scores["head_motion"] >= gate.liveness.config.motion_threshold  # type: ignore[operator]
    assert 0 < scores["liveness_ms"] == pytest.approx(out[0][1].elapsed_s * 1000.0, abs=1000 / FPS)  # type: ignore[operator]

    gate, clock = make()
    out = feed(gate, clock, photo(60, jitter=3.0))
    assert [v.decision for _, v in out] == [Decision.SPOOF]
    scores = gate.liveness_scores()
    assert scores["liveness"] == "failed" and scores["head_motion"] < gate.liveness.config.motion_threshold  # type: ignore[operator]
    assert scores["liveness_ms"] == pytest.approx(4000.0, abs=1000 / FPS)

    gate, clock = make("off")
    feed(gate, clock, photo(5))
    assert gate.liveness_scores() == {"liveness": "off"}
