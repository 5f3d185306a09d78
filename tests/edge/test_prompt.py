""""Please move": a worker whose matched face waits for the liveness cue is asked once per visit to move.

Three layers: the gate (pure, a fake clock) says when the prompt is due; the selftest shows the pattern on
gpiozero's MockFactory; the real agent (real photos, the real dlib models, mock pins) prompts a worker's still
photo once, then calls it a spoof, and never prompts a stranger. The door's pattern itself is in test_door.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from core.imaging import load_image
from edge.agent import EdgeAgent
from edge.config import DoorConfig, EdgeSettings
from edge.decisions import DoorActions
from edge.door import Door
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.liveness import LivenessConfig
from edge.policy import PolicyConfig
from edge.selftest import run_selftest
from edge.store import EdgeStore
from edge.tracker import FaceFrame
from models.messages import Decision, EventKind
from server.credentials import Signer
from tests.edge.server_side import upsert
from tests.edge.test_gate import FPS, Clock, face_points, match, seen
from tests.edge.test_one_entry import (  # noqa: F401 (enrolled, portraits: fixtures)
    BUZZER, RELAY, clicks, enrolled, frames_of, portraits, timeline,
)
from tests.edge.test_qr import EX, agent_settings, outbox

GREEN = 22


# -- the gate: when the prompt is due ----------------------------------------------------------------------------
def make(prompt_after_s: float = 1.2, time_limit_s: float = 4.0) -> tuple[DoorGate, Clock]:
    clock = Clock()
    policy = PolicyConfig(threshold=0.5, margin=0.06, min_face_px=60, frames_required=3, deny_after_frames=6,
                          visit_gap_s=1.5, cooldown_s=30.0)
    liveness = LivenessConfig(mode="either", time_limit_s=time_limit_s, prompt_after_s=prompt_after_s)
    return DoorGate(policy, liveness, clock), clock


def run(gate: DoorGate, clock: Clock, frames: list[FaceFrame | None]) -> list[tuple[float, str, str | None]]:
    """Frames at FPS, as the agent runs them: the verdict, then the prompt check. (time, what, who) per event."""
    out: list[tuple[float, str, str | None]] = []
    for f in frames:
        if f is not None and not gate.wants_encoding:
            f = FaceFrame(f.box, f.track_id, f.new_track, None, f.landmarks, f.frame_size)
        verdict = gate.observe(f)
        if verdict is not None:
            out.append((clock.t, verdict.decision.value, verdict.identity))
        due = gate.prompt_due()
        if due is not None:
            out.append((clock.t, "prompt", due.identity))
        clock.t += 1.0 / FPS
    return out


def still(n: int, identity: str | None = "ana", distance: float = 0.35) -> list[FaceFrame | None]:
    """A photo held perfectly still (or a worker who does not move): matched, landmarks fixed."""
    return [seen(match(identity, distance)) for _ in range(n)]


def turning(n: int, identity: str = "ana") -> list[FaceFrame | None]:
    return [seen(match(identity, 0.35), face_points(turn=0.25 * np.sin(i / 3.0))) for i in range(n)]


def test_a_held_grant_is_prompted_once_after_prompt_after_s_and_not_after_the_spoof() -> None:
    gate, clock = make()
    start = clock.t
    events = run(gate, clock, still(60))  # 6 s: past the 4-s limit
    assert [(what, who) for _, what, who in events] == [("prompt", "ana"), ("spoof", "ana")]
    held_at = start + 2 / FPS  # the policy's third agreeing frame
    assert events[0][0] == pytest.approx(held_at + 1.2, abs=1 / FPS)
    assert events[1][0] == pytest.approx(start + 4.0, abs=1 / FPS)
    assert gate.held is None and gate.held_since is None and gate.prompt_due() is None


def test_held_since_is_when_the_grant_started_waiting() -> None:
    gate, clock = make()
    start = clock.t
    run(gate, clock, still(5))
    assert gate.held is not None and gate.held_since == pytest.approx(start + 2 / FPS)


def test_a_worker_who_moves_after_the_prompt_is_let_in_and_not_prompted_again() -> None:
    gate, clock = make()
    events = run(gate, clock, still(16) + turning(40))
    assert [(what, who) for _, what, who in events] == [("prompt", "ana"), ("granted", "ana")]
    assert events[1][0] > events[0][0]


def test_a_worker_who_moves_in_time_is_never_prompted() -> None:
    gate, clock = make()
    events = run(gate, clock, turning(40))
    assert [what for _, what, _ in events] == ["granted"]
    assert events[0][0] < clock.t - 40 / FPS + 1.2 + 2 / FPS  # decided before the prompt would have been due


@pytest.mark.parametrize("distance", [0.7, 0.55])  # far from everyone; near a worker but beyond the threshold
def test_a_face_the_policy_has_not_matched_is_never_prompted(distance: float) -> None:
    gate, clock = make()
    events = run(gate, clock, still(60, identity=None if distance > 0.6 else "ana", distance=distance))
    assert [what for _, what, _ in events] == ["denied"]  # a stranger (or a stranger's photo): no hint, ever


def test_one_prompt_per_visit_and_a_new_visit_gets_its_own() -> None:
    gate, clock = make()
    first = run(gate, clock, still(20) + [None] * 20)  # 2 s at the door, then gone for 2 s (> visit_gap_s)
    assert [what for _, what, _ in first] == ["prompt"]  # asked; left before the 4-s limit: dropped, not recorded
    assert gate.abandoned == 1 and gate.held is None and gate.prompt_due() is None
    second = run(gate, clock, still(30))
    assert [what for _, what, _ in second] == ["prompt"]  # back: a new visit, asked again, once


def test_the_prompt_stays_off_with_prompt_after_s_zero_or_beyond_the_time_limit() -> None:
    for after in (0.0, 4.0):
        gate, clock = make(prompt_after_s=after)
        assert [what for _, what, _ in run(gate, clock, still(60))] == ["spoof"]


def test_a_held_grant_dropped_for_a_credential_is_not_prompted() -> None:
    gate, clock = make()
    run(gate, clock, still(5))
    assert gate.held is not None
    assert gate.grant_elsewhere("ana").open_door  # face_or_qr: her code let her in meanwhile
    assert [what for _, what, _ in run(gate, clock, still(20))] == []


# -- the door actions: the gate's prompt to the real door, on mock pins --------------------------------------------
def test_the_door_prompts_once_and_goes_dark_as_soon_as_the_visit_ends() -> None:
    factory = MockFactory()
    door = Door(DoorConfig(), pin_factory=factory)
    gate, clock = make()
    counts: Counter[str] = Counter()
    actions = DoorActions("st-1", door, lambda _e: True, gate=gate, holder=GalleryHolder(), configs=None,
                          snapshots=None, metrics=None, counts=counts, clock=clock,  # type: ignore[arg-type]
                          stopping=threading.Event())
    green = factory.pin(GREEN)
    try:
        for f in still(15):  # 1.5 s: held at 0.2 s, the prompt at 1.4 s
            gate.observe(f)
            actions.prompt(gate)
            clock.t += 1.0 / FPS
        assert counts["liveness_prompts"] == 1 and door.prompts == 1
        assert wait_until(lambda: green.state is True)  # blinking: the pattern runs 0.9 s
        for _ in range(20):  # she walks away: 2 s without a face (by the frames' clock) ends the visit
            gate.observe(None)
            actions.prompt(gate)
            clock.t += 1.0 / FPS
        assert gate.abandoned == 1 and green.state is False  # dark at once...
        assert [s.state for s in green.states].count(True) < 3  # ...mid-pattern, not after its three blinks
        n = len(green.states)
        time.sleep(0.5)
        assert len(green.states) == n and door.prompts == 1 and factory.pin(RELAY).state is False
    finally:
        door.close()
        factory.reset()


def wait_until(cond, timeout: float = 3.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.005)
    return cond()


# -- the selftest shows it -----------------------------------------------------------------------------------------
def test_the_selftest_shows_the_prompt_after_the_leds() -> None:
    factory = MockFactory()
    lines: list[str] = []
    settings = DoorConfig(unlock_s=1.0, alarm_on_s=0.1, alarm_off_s=0.1, exit_pin=None, prompt_beep_s=0.03)
    try:
        run_selftest(settings, pin_factory=factory, say=lines.append, watch_s=0.0, pause_s=0.0, alarm_s=0.2)
        green, buzzer = factory.pin(GREEN), factory.pin(BUZZER)
    finally:
        factory.reset()
    step = next(line for line in lines if line.startswith("please move"))
    assert "green LED blinks 3 times, one 0.03 s chirp" in step
    assert lines.index(step) > next(i for i, line in enumerate(lines) if line.startswith("red LED"))
    # The green LED: on for its own step, then three blinks of 0.15 s.
    assert [s.state for s in green.states].count(True) == 1 + 3
    tail = green.states[-6:]
    assert [s.state for s in tail] == [True, False] * 3
    assert all(s.timestamp == pytest.approx(0.15, abs=0.05) for s in tail[1:])
    last_on, last_off = buzzer.states[-2:]  # the chirp, after the buzzer's own steps
    assert (last_on.state, last_off.state) == (True, False) and last_off.timestamp == pytest.approx(0.03, abs=0.05)


# -- the real agent ------------------------------------------------------------------------------------------------
def liveness_on(tmp_path: Path, signer: Signer) -> EdgeSettings:
    settings = agent_settings(tmp_path, signer, "face")
    live = LivenessConfig(mode="either", time_limit_s=2.0)  # the shipped prompt_after_s (1.2 s)
    return settings.model_copy(update={"liveness": live})


def agent_run(settings: EdgeSettings, frames: Iterator, face_engine) -> tuple[list, MockFactory, EdgeAgent, bytes]:  # noqa: ANN001
    factory = MockFactory()
    with EdgeAgent(settings, frames=frames, pin_factory=factory, engine=face_engine) as agent:
        for pin in (RELAY, BUZZER, GREEN):
            factory.pin(pin).clear_states()
        agent.run()
        events = outbox(agent)
        metrics = agent.metrics.render(None)[0]
    return events, factory, agent, metrics


@pytest.mark.faces
@pytest.mark.models
def test_a_still_photo_of_a_worker_is_asked_to_move_once_then_called_a_spoof(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled, caplog  # noqa: ANN001, F811
) -> None:
    """His photo matches (it is his face), so it gets the prompt like he would; it cannot move, so it never passes."""
    caplog.set_level(logging.INFO, logger="edge.agent")
    settings = liveness_on(tmp_path, signer)
    photo = in_view(portraits["obama"])
    # Frames 0.2 s apart by their own clock: held at 0.4 s, the prompt due 1.2 s later, the spoof at 2.0 s. The
    # agent skips unchanged frames in milliseconds, so real pauses let the prompt, then the denial, play out.
    frames = timeline([photo] * 10, 1.2, [photo] * 5, 0.5)
    events, factory, agent, metrics = agent_run(settings, frames, face_engine)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.FACE, Decision.SPOOF, "obama")]
    assert agent.counts["liveness_prompts"] == 1 and agent.door is not None and agent.door.prompts == 1
    assert b"waystation_edge_liveness_prompts_total 1.0" in metrics
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.agent"]
    prompted = [i for i, m in enumerate(messages) if m.startswith("prompt: asked obama (Obama) to move")]
    spoofed = [i for i, m in enumerate(messages) if m.startswith("spoof obama")]
    assert len(prompted) == 1 and len(spoofed) == 1 and prompted[0] < spoofed[0], messages
    assert clicks(factory) == 0  # the relay never clicked
    # Green: three 0.15-s blinks, and never the steady green of a grant.
    green = factory.pin(GREEN).states
    assert [s.state for s in green] == [False] + [True, False] * 3, green
    assert all(s.timestamp == pytest.approx(0.15, abs=0.05) for s in green[2:])
    # The buzzer: the prompt's one chirp (0.03 s), then the spoof's two beeps (0.1 s); nothing else.
    buzzer = factory.pin(BUZZER).states
    assert [s.state for s in buzzer] == [False] + [True, False] * 3, buzzer
    assert buzzer[2].timestamp == pytest.approx(settings.door.prompt_beep_s, abs=0.05)
    assert buzzer[4].timestamp == pytest.approx(settings.door.beep_s, abs=0.05)
    assert buzzer[3].timestamp > 0.5  # the denial came after the pause, a separate sound


@pytest.mark.faces
@pytest.mark.models
def test_a_strangers_still_photo_gets_no_hint(
    tmp_path: Path, signer: Signer, faces: Path, face_engine, portraits  # noqa: ANN001, F811
) -> None:
    store = EdgeStore.open(tmp_path / "edge")  # only biden is enrolled: obama is a stranger here
    store.apply_changes([upsert(2, "biden", face_engine.encode_single(load_image(faces / EX / "biden/biden2.jpg"))[0])],
                        snapshot=False, latest_version=1)
    store.close()
    events, factory, agent, _ = agent_run(liveness_on(tmp_path, signer), timeline([in_view(portraits["obama"])] * 15),
                                          face_engine)
    assert [(e.decision, e.worker_id) for e in events] == [(Decision.DENIED, None)]
    assert agent.counts["liveness_prompts"] == 0 and agent.door is not None and agent.door.prompts == 0
    assert clicks(factory) == 0 and clicks(factory, GREEN) == 0  # no green at all: not even a blink


def in_view(portrait: np.ndarray) -> np.ndarray:
    """The portrait as a 640x480 camera frame (no code held up)."""
    return frames_of(portrait, None, 1)[0]
