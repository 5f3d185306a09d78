"""``./run edge selftest``: an installer checks every wire of the door, one device at a time.

The relay clicks, the buzzer plays each pattern, each LED lights, the
"please move" prompt shows (green blinking, one chirp), then the
live state of every fitted input is printed for ``watch_s`` seconds while the
installer presses the exit button, opens and shuts the door and opens the
enclosure. Nothing is recorded and no alarm logic runs: this is wiring, not
policy. Run it with the agent stopped (the agent holds the pins).
"""

from __future__ import annotations

import math
import queue
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edge.config import DoorConfig
from edge.door import PROMPT_BLINKS, PROMPT_S, Door
from edge.inputs import CONTACT, EXIT, TAMPER, DoorInputs, InputChange

Say = Callable[[str], None]

_LABELS = {EXIT: ("pressed", "released"), CONTACT: ("OPEN", "shut"), TAMPER: ("TAMPERED", "closed")}
_TITLES = {EXIT: "exit button", CONTACT: "door contact", TAMPER: "tamper switch"}


@dataclass
class SelftestResult:
    """What the installer should have seen; ``changes`` counts the input changes per input."""

    inputs: tuple[str, ...] = ()
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def silent_inputs(self) -> list[str]:
        """Fitted inputs that never changed while watched (unwired, or nobody tried them)."""
        return [name for name in self.inputs if not self.changes.get(name)]


def describe(name: str, active: bool, settings: DoorConfig) -> str:
    """An input's state in words, with the circuit level an installer can measure."""
    contact = {EXIT: settings.exit_contact, CONTACT: settings.contact_type, TAMPER: settings.tamper_contact}[name]
    closed = active == (contact == "no")
    word = _LABELS[name][0 if active else 1]
    return f"{_TITLES[name]}: {word} (circuit {'closed, pin low' if closed else 'open, pin high'})"


def run_selftest(
    settings: DoorConfig,
    *,
    pin_factory: Any = None,
    say: Say = print,
    watch_s: float = 15.0,
    pause_s: float = 1.0,
    alarm_s: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
) -> SelftestResult:
    """Run every step; raises DoorError when the pins cannot be claimed."""
    s = settings
    with Door(s, pin_factory=pin_factory, clock=clock) as door:
        inputs = DoorInputs(s, pin_factory=pin_factory, clock=clock)
        try:
            _outputs(door, s, say, pause_s, alarm_s)
            return _watch_inputs(inputs, s, say, watch_s, clock)
        finally:
            inputs.close()


def _outputs(door: Door, s: DoorConfig, say: Say, pause_s: float, alarm_s: float) -> None:
    mode = "fail-safe: energised = locked" if s.fail_safe else "fail-secure: energised = released"
    say(f"relay (BCM {s.relay_pin}, {'active-high' if s.relay_active_high else 'active-low'} board, {mode})")
    say(f"  lock RELEASED for {s.unlock_s:g} s: relay {'off' if s.fail_safe else 'ENERGISED'} -- listen for the click")
    door.relay.on()
    time.sleep(s.unlock_s)
    door.relay.off()
    say(f"  lock LOCKED again: relay {'ENERGISED' if s.fail_safe else 'off'}")
    time.sleep(pause_s)

    say(f"buzzer (BCM {s.buzzer_pin})")
    say("  granted: one short beep")
    door.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=1, background=False)
    time.sleep(pause_s)
    say("  denied: two short beeps")
    door.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=2, background=False)
    time.sleep(pause_s)
    cycles = max(1, math.ceil(alarm_s / (s.alarm_on_s + s.alarm_off_s)))
    say(f"  alarm: {s.alarm_on_s:g} s on, {s.alarm_off_s:g} s off, repeating ({cycles} times here)")
    door.buzzer.beep(on_time=s.alarm_on_s, off_time=s.alarm_off_s, n=cycles, background=False)
    time.sleep(pause_s)

    for led, pin, word in ((door.green, s.green_led_pin, "green"), (door.red, s.red_led_pin, "red")):
        say(f"{word} LED (BCM {pin}): on for {max(pause_s, 1.0):g} s")
        led.on()
        time.sleep(max(pause_s, 1.0))
        led.off()

    chirp = f"one {s.prompt_beep_s:g} s chirp" if s.prompt_beep_s > 0 else "no sound (prompt_beep_s: 0)"
    say(f"please move (a matched face held for liveness): green LED blinks {PROMPT_BLINKS} times, {chirp}")
    door.prompt()
    time.sleep(PROMPT_S + pause_s)  # the pattern runs on gpiozero's thread; let it finish before the inputs


def _watch_inputs(
    inputs: DoorInputs, s: DoorConfig, say: Say, watch_s: float, clock: Callable[[], float]
) -> SelftestResult:
    result = SelftestResult(inputs=inputs.names, changes={name: 0 for name in inputs.names})
    if not inputs.names:
        say("inputs: none fitted (exit_pin, contact_pin and tamper_pin are all null)")
        return result
    pins = {EXIT: s.exit_pin, CONTACT: s.contact_pin, TAMPER: s.tamper_pin}
    say(f"inputs, watched for {watch_s:g} s: press the exit button, open and shut the door, open the enclosure")
    for name, active in inputs.states().items():
        say(f"  now   BCM {pins[name]:>2}  {describe(name, active, s)}")
    changes: queue.Queue[InputChange] = queue.Queue()
    inputs.listener = changes.put
    started = clock()
    end = started + watch_s
    while True:
        remaining = end - clock()
        if remaining <= 0:
            break
        try:
            change = changes.get(timeout=min(remaining, 0.2))
        except queue.Empty:
            continue
        result.changes[change.name] += 1
        say(f"  {change.at - started:5.1f} s BCM {pins[change.name]:>2}  {describe(change.name, change.active, s)}")
    inputs.listener = None
    for name in result.silent_inputs:
        say(f"  {_TITLES[name]} (BCM {pins[name]}) never changed: check its wiring and *_contact setting")
    say("selftest done")
    return result
