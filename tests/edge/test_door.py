"""The door on gpiozero's own MockFactory: relay timing, polarity, beeps, LEDs, alarm, fail-secure and fail-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import DoorConfig
from edge.door import Door
from edge.errors import DoorError

REPO = Path(__file__).resolve().parents[2]


def wait_until(cond, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def factory() -> MockFactory:
    f = MockFactory()
    yield f
    f.reset()


@pytest.mark.parametrize("active_high", [True, False])
def test_grant_pulses_the_relay_for_unlock_s(factory: MockFactory, active_high: bool) -> None:
    door = Door(DoorConfig(unlock_s=1.0, relay_active_high=active_high), pin_factory=factory)
    relay = factory.pin(17)
    off_level, on_level = (False, True) if active_high else (True, False)
    assert relay.state == off_level and not door.unlocked  # locked from the start
    relay.clear_states()
    before = time.monotonic()
    switched_at = door.grant()
    assert before <= switched_at <= time.monotonic()
    assert wait_until(lambda: door.unlocked)
    assert wait_until(lambda: len(relay.states) >= 3, timeout=3.0)
    relay.assert_states_and_times([(0.0, off_level), (0.0, on_level), (1.0, off_level)])
    assert len(relay.states) == 3 and relay.state == off_level and not door.unlocked
    door.close()


def test_grant_returns_at_once_and_gives_one_beep_and_green(factory: MockFactory) -> None:
    door = Door(DoorConfig(unlock_s=1.0, beep_s=0.1), pin_factory=factory)
    buzzer, green, red = factory.pin(27), factory.pin(22), factory.pin(23)
    for p in (buzzer, green, red):
        p.clear_states()
    t0 = time.monotonic()
    door.grant()
    assert time.monotonic() - t0 < 0.2  # non-blocking: the camera loop goes on
    assert wait_until(lambda: len(green.states) >= 3, timeout=3.0)
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (0.1, False)])
    assert len(buzzer.states) == 3
    green.assert_states_and_times([(0.0, False), (0.0, True), (1.0, False)])
    assert red.states[-1].state is False and len(red.states) == 1
    door.close()


def test_deny_beeps_twice_lights_red_and_keeps_the_lock_shut(factory: MockFactory) -> None:
    door = Door(DoorConfig(beep_s=0.1, deny_led_s=0.5), pin_factory=factory)
    relay, buzzer, red = factory.pin(17), factory.pin(27), factory.pin(23)
    for p in (relay, buzzer, red):
        p.clear_states()
    door.deny()
    assert wait_until(lambda: len(buzzer.states) >= 5 and len(red.states) >= 3, timeout=3.0)
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (0.1, False), (0.1, True), (0.1, False)])
    red.assert_states_and_times([(0.0, False), (0.0, True), (0.5, False)])
    assert len(relay.states) == 1 and relay.state is False


def test_a_second_grant_during_unlock_extends_it_without_a_click(factory: MockFactory) -> None:
    door = Door(DoorConfig(unlock_s=1.0), pin_factory=factory)
    relay = factory.pin(17)
    relay.clear_states()
    door.grant()
    time.sleep(0.5)
    door.grant()
    assert wait_until(lambda: len(relay.states) >= 3, timeout=3.0)
    relay.assert_states_and_times([(0.0, False), (0.0, True), (1.5, False)])
    door.close()


@pytest.mark.parametrize("active_high", [True, False])
def test_close_switches_the_relay_off_mid_unlock_and_releases_the_pins(factory: MockFactory, active_high: bool) -> None:
    door = Door(DoorConfig(unlock_s=5.0, relay_active_high=active_high), pin_factory=factory)
    relay = factory.pin(17)
    door.grant()
    assert wait_until(lambda: door.unlocked)
    door.close()
    assert relay.states[-1].state == (not active_high)  # the last level written is "off"
    assert relay.function == "input"  # released
    door.close()  # twice is harmless
    with pytest.raises(DoorError):
        door.grant()
    # The pins are free again: another Door can claim them.
    Door(DoorConfig(), pin_factory=factory).close()


def test_pins_already_taken_are_reported_and_nothing_stays_claimed(factory: MockFactory) -> None:
    first = Door(DoorConfig(), pin_factory=factory)
    with pytest.raises(DoorError, match="GPIO"):
        Door(DoorConfig(relay_pin=9, buzzer_pin=10, green_led_pin=22, red_led_pin=24), pin_factory=factory)
    first.close()
    # The failed attempt released BCM 9 and 10 again.
    Door(DoorConfig(relay_pin=9, buzzer_pin=10, green_led_pin=7, red_led_pin=8), pin_factory=factory).close()


def test_the_same_pin_twice_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="both BCM 17"):
        DoorConfig(buzzer_pin=17)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=60, cwd=REPO)


def test_the_pin_driver_comes_from_gpiozero_pin_factory() -> None:
    code = (
        "from edge.config import DoorConfig\nfrom edge.door import Door\nfrom gpiozero import Device\n"
        "d = Door(DoorConfig()); print(type(Device.pin_factory).__name__); d.close()"
    )
    done = _run_python(code, GPIOZERO_PIN_FACTORY="mock")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "MockFactory"


def test_without_gpio_the_error_says_what_to_do() -> None:
    if Path("/proc/device-tree/model").exists() and "Raspberry" in Path("/proc/device-tree/model").read_text(errors="replace"):
        pytest.skip("this machine has real GPIO")
    code = "from edge.config import DoorConfig\nfrom edge.door import Door\nDoor(DoorConfig())"
    done = _run_python(code)
    assert done.returncode != 0
    assert "DoorError" in done.stderr and "GPIOZERO_PIN_FACTORY=mock" in done.stderr


@pytest.mark.parametrize("active_high", [True, False])
def test_fail_safe_holds_the_lock_energised_and_releases_it_on_every_way_out(
    factory: MockFactory, active_high: bool
) -> None:
    """fail_safe: energised = locked. A grant de-energises for unlock_s; stop and close leave it de-energised."""
    door = Door(DoorConfig(unlock_s=1.0, relay_active_high=active_high, fail_safe=True), pin_factory=factory)
    relay = factory.pin(17)
    energised, released = (True, False) if active_high else (False, True)
    assert relay.state == energised and not door.unlocked and door.relay_energised  # locked from the start
    relay.clear_states()
    door.grant()
    assert wait_until(lambda: len(relay.states) >= 3, timeout=3.0)
    relay.assert_states_and_times([(0.0, energised), (0.0, released), (1.0, energised)])
    assert len(relay.states) == 3 and not door.unlocked
    door.failure_state()  # what stop(), SIGTERM and an unhandled error do
    assert relay.state == released and not door.relay_energised
    n = len(relay.states)
    door.close()
    assert relay.states[-1].state == released and relay.function == "input"
    # Closing never energised the coil on the way out (no click into "locked").
    assert all(s.state == released for s in relay.states[n - 1 :])


def test_fail_secure_failure_state_locks_at_once_mid_unlock(factory: MockFactory) -> None:
    door = Door(DoorConfig(unlock_s=5.0), pin_factory=factory)
    relay = factory.pin(17)
    door.grant()
    assert wait_until(lambda: relay.state is True)
    t0 = time.monotonic()
    door.failure_state()
    assert relay.state is False and not door.unlocked
    assert time.monotonic() - t0 < 0.2
    time.sleep(0.3)
    assert relay.state is False  # the unlock timer does not switch it back on
    door.close()


def test_alarm_repeats_long_beeps_with_the_red_led_until_cleared(factory: MockFactory) -> None:
    door = Door(DoorConfig(alarm_on_s=0.3, alarm_off_s=0.2), pin_factory=factory)
    buzzer, red, relay = factory.pin(27), factory.pin(23), factory.pin(17)
    for p in (buzzer, red, relay):
        p.clear_states()
    door.set_alarms({"held_open"})
    assert door.alarms == {"held_open"}
    assert wait_until(lambda: len(buzzer.states) >= 6, timeout=3.0)
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (0.3, False), (0.2, True), (0.3, False), (0.2, True)])
    red.assert_states_and_times([(0.0, False), (0.0, True), (0.3, False), (0.2, True)])
    door.set_alarms({"held_open", "tamper"})  # a second cause while sounding: still one alarm
    door.set_alarms(set())
    assert buzzer.state is False and red.state is False
    n = len(buzzer.states)
    time.sleep(0.6)
    assert len(buzzer.states) == n  # cleared means silent
    assert len(relay.states) == 1  # an alarm never touches the lock
    door.close()


def test_the_alarm_stops_by_itself_after_alarm_max_s(factory: MockFactory) -> None:
    door = Door(DoorConfig(alarm_on_s=0.2, alarm_off_s=0.2, alarm_max_s=1.0), pin_factory=factory)
    buzzer = factory.pin(27)
    buzzer.clear_states()
    door.set_alarms({"forced_open"})
    time.sleep(1.6)
    assert buzzer.state is False
    beeps = [s for s in buzzer.states if s.state is True]
    assert len(beeps) == 3  # ceil(1.0 / 0.4) cycles, then quiet although the cause is still active
    assert door.alarms == {"forced_open"}
    door.set_alarms({"forced_open", "tamper"})  # a new cause sounds it again
    assert wait_until(lambda: buzzer.state is True, timeout=1.0)
    door.close()


def test_during_an_alarm_grants_open_silently_and_denials_stay_silent(factory: MockFactory) -> None:
    door = Door(DoorConfig(unlock_s=1.0, alarm_on_s=2.0, alarm_off_s=0.5), pin_factory=factory)
    buzzer, green, relay = factory.pin(27), factory.pin(22), factory.pin(17)
    door.set_alarms({"tamper"})
    assert wait_until(lambda: buzzer.state is True)
    buzzer.clear_states()
    door.grant()
    door.deny()
    time.sleep(0.5)
    assert [s.state for s in buzzer.states] == [True]  # the 2 s alarm tone was not cut by a beep
    assert relay.state is True and green.state is True  # the door still opened, and shows it
    assert door.grants == 1 and door.denials == 1
    door.close()


# -- "please move": the liveness prompt -------------------------------------------------------------------------
def test_prompt_blinks_green_three_times_with_one_chirp_and_never_touches_the_lock(factory: MockFactory) -> None:
    door = Door(DoorConfig(prompt_beep_s=0.03), pin_factory=factory)
    relay, buzzer, green, red = factory.pin(17), factory.pin(27), factory.pin(22), factory.pin(23)
    for p in (relay, buzzer, green, red):
        p.clear_states()
    t0 = time.monotonic()
    assert door.prompt() is True
    assert time.monotonic() - t0 < 0.2  # non-blocking: the camera loop goes on
    assert wait_until(lambda: len(green.states) >= 7, timeout=3.0)
    green.assert_states_and_times(
        [(0.0, False), (0.0, True), (0.15, False), (0.15, True), (0.15, False), (0.15, True), (0.15, False)]
    )
    time.sleep(0.2)
    assert len(green.states) == 7 and green.state is False  # three blinks, then dark
    # One chirp, a third of the granted beep: a worker hears "something is asked", not "come in".
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (0.03, False)])
    assert len(buzzer.states) == 3
    assert len(relay.states) == 1 and relay.state is False and not door.unlocked  # it opens nothing
    assert len(red.states) == 1 and door.prompts == 1 and door.grants == 0
    door.close()


def test_prompt_can_be_silent(factory: MockFactory) -> None:
    door = Door(DoorConfig(prompt_beep_s=0.0), pin_factory=factory)
    buzzer, green = factory.pin(27), factory.pin(22)
    buzzer.clear_states()
    green.clear_states()
    door.prompt()
    assert wait_until(lambda: len(green.states) >= 7, timeout=3.0)
    assert len(buzzer.states) == 1 and buzzer.state is False  # the blinking alone
    door.close()


def test_a_grant_replaces_the_prompt_with_the_steady_green_and_the_beep(factory: MockFactory) -> None:
    door = Door(DoorConfig(unlock_s=1.0, beep_s=0.1), pin_factory=factory)
    buzzer, green = factory.pin(27), factory.pin(22)
    door.prompt()
    time.sleep(0.05)  # mid-prompt: the first blink is on
    buzzer.clear_states()
    green.clear_states()
    door.grant()  # the person turned their head
    assert wait_until(lambda: len(green.states) >= 2, timeout=3.0)
    green.assert_states_and_times([(0.0, True), (1.0, False)])  # stays lit, steady for unlock_s: no more blinking
    assert len(green.states) == 2
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (0.1, False)])
    assert len(buzzer.states) == 3
    door.end_prompt()  # the agent's call after the decision changes nothing now
    assert green.state is False and len(green.states) == 2
    door.close()


def test_a_denial_or_the_end_of_the_visit_stops_the_prompt_at_once(factory: MockFactory) -> None:
    door = Door(DoorConfig(beep_s=0.1, deny_led_s=0.5), pin_factory=factory)
    buzzer, green, red = factory.pin(27), factory.pin(22), factory.pin(23)
    door.prompt()
    time.sleep(0.05)
    assert green.state is True
    door.deny()  # a spoof: red and two beeps, no green blinking on
    time.sleep(0.6)
    assert green.state is False and [s.state for s in green.states].count(True) == 1
    assert [s.state for s in red.states[-3:]] == [False, True, False]
    assert [s.state for s in buzzer.states].count(True) == 1 + 2  # the chirp, then the denial's two beeps

    green.clear_states()
    door.prompt()
    time.sleep(0.05)
    door.end_prompt()  # the worker walked away before deciding
    assert green.state is False
    n = len(green.states)
    time.sleep(0.5)
    assert len(green.states) == n  # no blink after the end
    assert [s.state for s in green.states].count(True) == 1
    door.close()


def test_no_prompt_while_the_door_is_open_and_no_chirp_over_an_alarm(factory: MockFactory) -> None:
    door = Door(DoorConfig(unlock_s=1.0, alarm_on_s=2.0, alarm_off_s=0.5), pin_factory=factory)
    buzzer, green = factory.pin(27), factory.pin(22)
    door.grant()
    assert wait_until(lambda: door.unlocked)
    green.clear_states()
    assert door.prompt() is False  # the steady green says "come in": not blinked away
    assert green.state is True and len(green.states) == 1
    assert wait_until(lambda: not door.unlocked, timeout=3.0)
    door.set_alarms({"tamper"})
    assert wait_until(lambda: buzzer.state is True)
    buzzer.clear_states()
    green.clear_states()
    assert door.prompt() is True
    assert wait_until(lambda: len(green.states) >= 7, timeout=3.0)  # the LED still asks...
    assert [s.state for s in buzzer.states] == [True]  # ...but the alarm tone is not cut by a chirp
    door.close()
    assert door.prompt() is False  # closed: nothing
