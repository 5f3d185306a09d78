"""The door's inputs: the pure rules, the pins on gpiozero's MockFactory, the watch thread, the agent's outbox, selftest."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.agent import EdgeAgent
from edge.config import DoorConfig, EdgeSettings
from edge.door import Door
from edge.inputs import CONTACT, EXIT, TAMPER, DoorEvent, DoorInputs, DoorMonitor, DoorWatch, InputChange
from edge.selftest import run_selftest
from models.messages import Decision, EventKind
from tests.edge.server_side import ServerSide
from tests.support.services import Mosquitto

REPO = Path(__file__).resolve().parents[2]
EXIT_PIN, CONTACT_PIN, TAMPER_PIN = 5, 6, 13


def wait_until(cond, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def fitted(**over: object) -> DoorConfig:
    values: dict[str, object] = {"contact_pin": CONTACT_PIN, "tamper_pin": TAMPER_PIN, "bounce_s": 0.0} | over
    return DoorConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


# -- the rules, pure ---------------------------------------------------------------------------------
def test_exit_button_opens_every_time_but_one_press_in_an_unlock_time_is_one_record() -> None:
    m = DoorMonitor(fitted(unlock_s=3.0))
    first = m.change(InputChange(EXIT, True, 10.0), unlocked_until=0.0)
    assert first.open_door and [(e.kind, e.decision) for e in first.events] == [(EventKind.EXIT_REQUEST, Decision.GRANTED)]
    assert m.change(InputChange(EXIT, False, 10.2), unlocked_until=13.0).events == ()
    again = m.change(InputChange(EXIT, True, 11.0), unlocked_until=13.0)
    assert again.open_door and again.events == ()
    later = m.change(InputChange(EXIT, True, 14.5), unlocked_until=14.0)
    assert later.open_door and len(later.events) == 1


def test_opening_during_the_unlock_time_or_its_grace_is_normal_later_is_forced() -> None:
    m = DoorMonitor(fitted(open_grace_s=1.0))
    assert m.change(InputChange(CONTACT, True, 12.5), unlocked_until=12.0).events == ()  # within the grace
    assert m.alarms == frozenset()
    m.change(InputChange(CONTACT, False, 14.0), unlocked_until=12.0)
    forced = m.change(InputChange(CONTACT, True, 20.0), unlocked_until=12.0)
    assert [(e.kind, e.decision) for e in forced.events] == [(EventKind.FORCED_OPEN, Decision.DENIED)]
    assert m.alarms == {"forced_open"}
    assert m.change(InputChange(CONTACT, True, 20.1), unlocked_until=12.0).events == ()  # a repeated edge
    m.change(InputChange(CONTACT, False, 25.0), unlocked_until=12.0)
    assert m.alarms == frozenset()  # shut again: quiet


def test_held_open_fires_once_after_held_open_s_and_clears_when_shut() -> None:
    m = DoorMonitor(fitted(held_open_s=30.0))
    m.change(InputChange(CONTACT, True, 100.0), unlocked_until=101.0)
    assert m.next_deadline() == 130.0
    assert m.tick(129.9).events == ()
    held = m.tick(130.0)
    assert [(e.kind, e.decision) for e in held.events] == [(EventKind.HELD_OPEN, Decision.DENIED)]
    assert "30 s" in held.events[0].reason and m.alarms == {"held_open"}
    assert m.tick(200.0).events == () and m.next_deadline() is None
    m.change(InputChange(CONTACT, False, 201.0), unlocked_until=101.0)
    assert m.alarms == frozenset()
    m.change(InputChange(CONTACT, True, 300.0), unlocked_until=299.0)
    assert m.next_deadline() == 330.0  # a new opening, a new timer


def test_tamper_raises_once_and_clears_when_closed_again() -> None:
    m = DoorMonitor(fitted())
    first = m.change(InputChange(TAMPER, True, 1.0), unlocked_until=0.0)
    assert [(e.kind, e.decision) for e in first.events] == [(EventKind.TAMPER, Decision.DENIED)]
    assert m.change(InputChange(TAMPER, True, 1.5), unlocked_until=0.0).events == ()
    assert m.alarms == {"tamper"}
    m.change(InputChange(TAMPER, False, 2.0), unlocked_until=0.0)
    assert m.alarms == frozenset()


def test_at_start_an_open_door_starts_the_timer_and_tamper_alarms() -> None:
    m = DoorMonitor(fitted(held_open_s=10.0))
    step = m.start({CONTACT: True, TAMPER: True, EXIT: False}, now=50.0)
    assert [e.kind for e in step.events] == [EventKind.TAMPER]  # an open door at start is not "forced": cause unknown
    assert m.next_deadline() == 60.0 and m.alarms == {"tamper"}


# -- the pins ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("contact", "open_level"), [("nc", "high"), ("no", "low")])
def test_contact_polarity_nc_and_no(factory: MockFactory, contact: str, open_level: str) -> None:
    changes: list[InputChange] = []
    inputs = DoorInputs(fitted(contact_type=contact), pin_factory=factory, listener=changes.append)
    pin = factory.pin(CONTACT_PIN)
    shut, opened = (pin.drive_low, pin.drive_high) if open_level == "high" else (pin.drive_high, pin.drive_low)
    shut()
    assert inputs.states()[CONTACT] is False
    changes.clear()
    opened()
    assert inputs.states()[CONTACT] is True
    shut()
    assert [(c.name, c.active) for c in changes] == [(CONTACT, True), (CONTACT, False)]
    inputs.close()
    assert pin.function == "input" and pin.when_changed is None  # released


def test_exit_button_no_and_nc(factory: MockFactory) -> None:
    inputs = DoorInputs(fitted(exit_contact="nc", tamper_pin=None), pin_factory=factory)
    button = factory.pin(EXIT_PIN)
    button.drive_low()  # an NC button at rest closes the circuit
    assert inputs.states() == {EXIT: False, CONTACT: True}  # contact pin floats high: door reads open
    button.drive_high()
    assert inputs.states()[EXIT] is True
    inputs.close()


def test_unfitted_inputs_claim_no_pins(factory: MockFactory) -> None:
    inputs = DoorInputs(DoorConfig(exit_pin=None), pin_factory=factory)
    assert inputs.names == () and inputs.states() == {}
    inputs.close()


# -- the watch: pins -> rules -> door and events -----------------------------------------------------------
class Watched:
    """A door with its watch on mock pins, door shut and enclosure closed at start."""

    def __init__(self, factory: MockFactory, settings: DoorConfig) -> None:
        self.factory = factory
        self.events: list[DoorEvent] = []
        self.door = Door(settings, pin_factory=factory)
        self.watch = DoorWatch(settings, self.door, on_event=self.events.append, pin_factory=factory)
        factory.pin(CONTACT_PIN).drive_low()  # NC contact closed: door shut
        factory.pin(TAMPER_PIN).drive_low()  # NC tamper closed: enclosure shut
        self.watch.start()

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def close(self) -> None:
        self.watch.close()
        self.door.close()


def test_exit_button_pulses_the_relay_and_is_recorded(factory: MockFactory) -> None:
    w = Watched(factory, fitted(unlock_s=1.0))
    relay, button = factory.pin(17), factory.pin(EXIT_PIN)
    relay.clear_states()
    button.drive_low()  # pressed
    button.drive_high()
    assert wait_until(lambda: len(relay.states) >= 3, timeout=3.0)
    relay.assert_states_and_times([(0.0, False), (0.0, True), (1.0, False)])
    assert w.kinds() == [EventKind.EXIT_REQUEST] and w.events[0].decision == Decision.GRANTED
    w.close()


def test_the_door_opened_after_an_exit_is_fine_but_held_open_alarms(factory: MockFactory) -> None:
    w = Watched(factory, fitted(unlock_s=1.0, held_open_s=2.0, alarm_on_s=0.3, alarm_off_s=0.2))
    buzzer, contact = factory.pin(27), factory.pin(CONTACT_PIN)
    factory.pin(EXIT_PIN).drive_low()
    assert wait_until(lambda: w.door.unlocked)
    contact.drive_high()  # door opens within the unlock time
    time.sleep(0.5)
    assert w.kinds() == [EventKind.EXIT_REQUEST] and not w.door.alarms
    buzzer.clear_states()
    assert wait_until(lambda: EventKind.HELD_OPEN in w.kinds(), timeout=4.0)
    held_at = time.monotonic()
    assert wait_until(lambda: len(buzzer.states) >= 5, timeout=2.0)
    # The alarm pattern: on 0.3 s, off 0.2 s, on again (the first delta is from clear_states).
    assert [s.state for s in buzzer.states[:5]] == [False, True, False, True, False]
    assert [s.timestamp for s in buzzer.states[2:5]] == pytest.approx([0.3, 0.2, 0.3], abs=0.05)
    contact.drive_low()  # shut: the alarm stops
    assert wait_until(lambda: buzzer.state is False and not w.door.alarms, timeout=2.0)
    assert time.monotonic() - held_at < 3.0
    w.close()


def test_forced_open_without_a_grant_alarms_until_shut(factory: MockFactory) -> None:
    w = Watched(factory, fitted(alarm_on_s=0.5, alarm_off_s=0.5))
    buzzer, red, relay = factory.pin(27), factory.pin(23), factory.pin(17)
    contact = factory.pin(CONTACT_PIN)
    contact.drive_high()
    assert wait_until(lambda: EventKind.FORCED_OPEN in w.kinds())
    assert wait_until(lambda: buzzer.state is True and red.state is True)
    assert relay.state is False  # the alarm never opens the lock
    assert w.events[0].decision == Decision.DENIED and "without a grant" in w.events[0].reason
    contact.drive_low()
    assert wait_until(lambda: buzzer.state is False and red.state is False)
    w.close()


def test_a_face_grant_makes_the_opening_legitimate(factory: MockFactory) -> None:
    w = Watched(factory, fitted(unlock_s=1.0))
    w.door.grant()
    factory.pin(CONTACT_PIN).drive_high()
    time.sleep(0.3)
    factory.pin(CONTACT_PIN).drive_low()
    time.sleep(0.2)
    assert w.kinds() == [] and not w.door.alarms
    w.close()


def test_tamper_alarms_and_is_recorded(factory: MockFactory) -> None:
    w = Watched(factory, fitted())
    tamper = factory.pin(TAMPER_PIN)
    tamper.drive_high()  # the lid opened (NC switch opens)
    assert wait_until(lambda: w.kinds() == [EventKind.TAMPER])
    assert wait_until(lambda: factory.pin(27).state is True)
    tamper.drive_low()
    assert wait_until(lambda: not w.door.alarms and factory.pin(27).state is False)
    w.close()


# -- the agent: door events become entries in the outbox and reach the server -----------------------------
@pytest.mark.broker
@pytest.mark.models
def test_agent_records_exit_forced_held_and_tamper_and_they_reach_the_server(
    mosquitto: Mosquitto, face_engine, tmp_path: Path  # noqa: ANN001
) -> None:
    settings = EdgeSettings.build(
        station_id="st-door",
        data_dir=tmp_path / "edge",
        mqtt={"host": mosquitto.host, "port": mosquitto.port},
        # NO contacts here: the mock pins rest high (pull-up), which NO reads as shut / not tampered.
        door={"unlock_s": 1.0, "contact_pin": CONTACT_PIN, "contact_type": "no", "tamper_pin": TAMPER_PIN,
              "tamper_contact": "no", "held_open_s": 2.0, "bounce_s": 0},
    )
    factory = MockFactory()
    stop = threading.Event()

    def frames() -> Iterator[np.ndarray]:  # an empty doorway until the test is done
        while not stop.is_set():
            time.sleep(0.1)
            yield np.full((240, 320, 3), 90, np.uint8)

    with ServerSide(mosquitto.host, mosquitto.port) as server:
        agent = EdgeAgent(settings, frames=frames(), pin_factory=factory, engine=face_engine)
        agent.start()
        loop = threading.Thread(target=agent.run, daemon=True)
        loop.start()
        try:
            contact, button, tamper, relay = (factory.pin(p) for p in (CONTACT_PIN, EXIT_PIN, TAMPER_PIN, 17))
            button.drive_low()
            button.drive_high()
            assert wait_until(lambda: relay.state is True)
            contact.drive_low()  # walks out through the released door...
            assert wait_until(lambda: agent.counts["held_open"] == 1, timeout=5.0)  # ...and leaves it open
            contact.drive_high()
            assert wait_until(lambda: relay.state is False, timeout=3.0)
            contact.drive_low()  # somebody pulls the locked door open
            assert wait_until(lambda: agent.counts["forced_open"] == 1)
            contact.drive_high()
            tamper.drive_low()
            assert wait_until(lambda: agent.counts["tamper"] == 1)
            want = [EventKind.EXIT_REQUEST, EventKind.HELD_OPEN, EventKind.FORCED_OPEN, EventKind.TAMPER]
            assert server.wait(lambda: len([e for e in server.entries if e.station_id == "st-door"]) >= 4, timeout=20)
        finally:
            stop.set()
            loop.join(5)
            agent.stop()
    got = [e for e in server.entries if e.station_id == "st-door"]
    assert [e.kind for e in got] == want
    assert [e.decision for e in got] == [Decision.GRANTED, Decision.DENIED, Decision.DENIED, Decision.DENIED]
    assert all(e.worker_id is None and e.reason for e in got)
    assert relay.state is False and relay.function == "input"  # stopped: locked, pins released


# -- selftest ------------------------------------------------------------------------------------------------
def test_selftest_clicks_beeps_lights_and_shows_each_input_change(factory: MockFactory) -> None:
    settings = fitted(unlock_s=1.0, alarm_on_s=0.2, alarm_off_s=0.2)
    lines: list[str] = []
    relay, buzzer, green, red = (factory.pin(p) for p in (17, 27, 22, 23))

    def installer() -> None:  # presses, opens and shuts while the inputs are watched
        assert wait_until(lambda: any("inputs, watched" in line for line in lines), timeout=15)
        for pin in (factory.pin(EXIT_PIN), factory.pin(CONTACT_PIN)):
            pin.drive_low()
            time.sleep(0.05)
            pin.drive_high()
            time.sleep(0.05)

    helper = threading.Thread(target=installer)
    helper.start()
    result = run_selftest(settings, pin_factory=factory, say=lines.append, watch_s=1.5, pause_s=0.0, alarm_s=0.8)
    helper.join()
    assert [s.state for s in relay.states] == [False, True, False]  # one click on, one off
    relay.assert_states_and_times([(0.0, False), (0.0, True), (1.0, False)])
    beeps = [s for s in buzzer.states if s.state]
    assert len(beeps) == 1 + 2 + 2 + 1  # granted, denied, alarm (0.8 s of 0.4 s cycles), the "please move" chirp
    assert [s.state for s in green.states] == [False, True, False] + [True, False] * 3  # its own step, then the prompt
    assert [s.state for s in red.states] == [False, True, False]
    assert result.changes == {EXIT: 2, CONTACT: 2, TAMPER: 0} and result.silent_inputs == [TAMPER]
    text = "\n".join(lines)
    assert "exit button: pressed (circuit closed, pin low)" in text
    assert "door contact: OPEN (circuit open, pin high)" in text and "door contact: shut" in text
    assert "tamper switch (BCM 13) never changed" in text
    assert relay.function == "input"  # pins released at the end


def test_selftest_command_runs_on_mock_pins(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("station_id: st-self\ndoor: {unlock_s: 1, contact_pin: 6, alarm_on_s: 0.1, alarm_off_s: 0.1}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYSTATION_EDGE_")} | {"GPIOZERO_PIN_FACTORY": "mock"}
    done = subprocess.run(
        [sys.executable, "-m", "edge", "selftest", "--config", str(config), "--watch", "0.2", "--pause", "0"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for expected in ("relay (BCM 17", "granted: one short beep", "denied: two short beeps", "alarm:",
                     "green LED (BCM 22)", "red LED (BCM 23)", "door contact: OPEN", "selftest done"):
        assert expected in done.stdout, done.stdout
