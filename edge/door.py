"""The door's outputs: lock relay, buzzer, green and red LEDs (gpiozero; inputs are in edge.inputs).

Pins come from config (BCM numbering). The pin driver comes from
``pin_factory`` or, when None, from gpiozero's default, which honours the
``GPIOZERO_PIN_FACTORY`` environment variable (``mock`` on a laptop). The code
never forces a mock: on a Pi it drives real pins.

Failure semantics (``DoorConfig.fail_safe``):

- **fail-secure** (default): the relay *energised releases* the lock (a
  fail-secure strike on the relay's NO contact). The relay is off at start,
  :meth:`Door.failure_state` (called on stop, SIGTERM and unhandled errors)
  switches it off, and :meth:`Door.close` releases the pins. A released pin,
  a crashed process or a Pi without power leave the relay off: locked.
- **fail-safe**: the relay *energised holds* the lock (lock power through the
  relay's NO contact, or a fail-safe lock). The relay is energised at start
  (locked); a grant de-energises it for ``unlock_s``; ``failure_state`` and
  ``close`` de-energise it: released. So does anything that kills the agent or
  the Pi, which is the point: egress must not depend on this software.

In both modes the relay device's *logical* value means "door released", so the
rest of the code never needs to know which mode is in use.

Buzzer patterns: granted = one short beep; denied = two short beeps; alarm =
``alarm_on_s`` on / ``alarm_off_s`` off, repeating until its cause clears, at
most ``alarm_max_s``. While an alarm sounds, grants and denials do not beep
(the door still acts and the LEDs still show it) so the alarm stays recognisable.

"Please move" (:meth:`Door.prompt`, for a worker's face held for liveness,
edge/gate.py): the green LED blinks ``PROMPT_BLINKS`` times and the buzzer
gives one chirp of ``prompt_beep_s`` (0.03 s: a tick, shorter than the 0.1 s
beep; 0 = silent). It never touches the relay; a grant or denial replaces it,
and :meth:`Door.end_prompt` stops it when the visit ends.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Iterable

from gpiozero import LED, Buzzer, DigitalOutputDevice, GPIOZeroError

from edge.config import DoorConfig
from edge.errors import DoorError

log = logging.getLogger(__name__)

PROMPT_BLINKS = 3
PROMPT_BLINK_S = 0.15
"""The "please move" blink: on and off this long, ``PROMPT_BLINKS`` times (0.9 s): unlike the steady green of a grant."""
PROMPT_S = 2 * PROMPT_BLINKS * PROMPT_BLINK_S


class Door:
    """Relay (lock), buzzer and two LEDs. Safe to call from several threads.

    ``grant()`` and ``deny()`` return at once; the timings run on gpiozero's
    background threads, so neither the camera loop nor the input watcher waits.
    """

    def __init__(self, settings: DoorConfig, *, pin_factory: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._alarms: frozenset[str] = frozenset()
        self.relay_on_at: float | None = None
        self.unlocked_until = -math.inf
        """Clock time until which the last grant keeps the lock released (for forced-open detection)."""
        self.grants = 0
        self.denials = 0
        self.prompts = 0
        self._prompt_until = -math.inf  # clock time the "please move" pattern ends by itself
        devices: list[Any] = []
        try:
            # Relay first: if a later pin fails, the lock is already claimed in its locked state.
            # Its logical value is "door released" in both modes (see the module docstring).
            self.relay = DigitalOutputDevice(
                settings.relay_pin,
                active_high=settings.relay_active_high != settings.fail_safe,
                initial_value=False,
                pin_factory=pin_factory,
            )
            devices.append(self.relay)
            self.buzzer = Buzzer(settings.buzzer_pin, initial_value=False, pin_factory=pin_factory)
            devices.append(self.buzzer)
            self.green = LED(settings.green_led_pin, initial_value=False, pin_factory=pin_factory)
            devices.append(self.green)
            self.red = LED(settings.red_led_pin, initial_value=False, pin_factory=pin_factory)
            devices.append(self.red)
        except (GPIOZeroError, OSError, ImportError) as err:
            for dev in reversed(devices):
                _quietly(dev.close)
            raise DoorError(
                f"cannot claim the door's GPIO pins ({type(err).__name__}: {err}); on a machine without GPIO "
                "set GPIOZERO_PIN_FACTORY=mock"
            ) from err
        log.info(
            "door ready: relay BCM %d (%s board, %s), buzzer BCM %d, LEDs BCM %d/%d",
            settings.relay_pin,
            "active-high" if settings.relay_active_high else "active-low",
            "fail-safe: energised = locked" if settings.fail_safe else "fail-secure: energised = released",
            settings.buzzer_pin,
            settings.green_led_pin,
            settings.red_led_pin,
        )

    # -- state ------------------------------------------------------------------------
    @property
    def unlocked(self) -> bool:
        """True while the lock is released by a grant."""
        return bool(self.relay.is_active) if not self._closed else False

    @property
    def relay_energised(self) -> bool:
        """Whether current flows through the relay coil (what an installer hears and measures)."""
        return (self.unlocked != self.settings.fail_safe) if not self._closed else False

    @property
    def alarms(self) -> frozenset[str]:
        """Causes of the alarm currently active (e.g. ``{"held_open"}``); empty when quiet."""
        return self._alarms

    # -- actions ------------------------------------------------------------------------
    def grant(self) -> float:
        """Release the lock for unlock_s, one short beep, green LED; returns the clock time the relay switched.

        A grant while the lock is already released restarts the unlock time
        without a click (the relay stays as it is).
        """
        s = self.settings
        with self._lock:
            if self._closed:
                raise DoorError("the door is closed (agent stopping)")
            if not self._alarms:
                self.red.off()
            self.relay.blink(on_time=s.unlock_s, off_time=0, n=1, background=True)
            switched_at = self._clock()
            self.green.blink(on_time=s.unlock_s, off_time=0, n=1, background=True)
            if not self._alarms:
                self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=1, background=True)
            self.relay_on_at = switched_at
            self.unlocked_until = switched_at + s.unlock_s
            self.grants += 1
            self._prompt_until = -math.inf  # the green LED and the beep above replaced it
        return switched_at

    def deny(self) -> None:
        """Two short beeps and the red LED; the lock stays shut. Silent while an alarm sounds."""
        s = self.settings
        with self._lock:
            if self._closed:
                return
            self.denials += 1
            self._stop_prompt()
            if self._alarms:
                return
            if not self.relay.is_active:
                self.green.off()
            self.red.blink(on_time=s.deny_led_s, off_time=0, n=1, background=True)
            self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=2, background=True)

    def prompt(self) -> bool:
        """"Please move": the green LED blinks ``PROMPT_BLINKS`` times, one chirp of ``prompt_beep_s``; returns at once.

        For a worker's face that matched but has not yet shown it is live. Opens
        nothing. Shows nothing (False) while the lock is released, since the
        steady green LED shows that, or once the door is closed. No chirp while
        an alarm sounds. :meth:`grant` and :meth:`deny` replace the pattern,
        :meth:`end_prompt` stops it.
        """
        s = self.settings
        with self._lock:
            if self._closed or self.relay.is_active:
                return False
            self.green.blink(on_time=PROMPT_BLINK_S, off_time=PROMPT_BLINK_S, n=PROMPT_BLINKS, background=True)
            if s.prompt_beep_s > 0 and not self._alarms:
                self.buzzer.beep(on_time=s.prompt_beep_s, off_time=s.prompt_beep_s, n=1, background=True)
            self._prompt_until = self._clock() + max(PROMPT_S, 2 * s.prompt_beep_s)
            self.prompts += 1
        return True

    def end_prompt(self) -> None:
        """Stop a "please move" pattern still showing (its visit ended); cheap, and a no-op when none is."""
        with self._lock:
            if not self._closed:
                self._stop_prompt()

    def _stop_prompt(self) -> None:
        if self._clock() >= self._prompt_until:
            return
        self._prompt_until = -math.inf
        self.green.off()
        if not self._alarms:  # the alarm's tone is not the prompt's to stop
            self.buzzer.off()

    def set_alarms(self, causes: Iterable[str]) -> None:
        """Make ``causes`` the active alarm causes: sound when one is added, stop when none is left.

        The pattern repeats for at most ``alarm_max_s``; a new cause sounds it again.
        """
        s = self.settings
        active = frozenset(causes)
        with self._lock:
            if self._closed:
                return
            added = active - self._alarms
            self._alarms = active
            if not active:
                self.buzzer.off()
                self.red.off()
                return
            if added:
                cycles = max(1, math.ceil(s.alarm_max_s / (s.alarm_on_s + s.alarm_off_s)))
                self.buzzer.beep(on_time=s.alarm_on_s, off_time=s.alarm_off_s, n=cycles, background=True)
                self.red.blink(on_time=s.alarm_on_s, off_time=s.alarm_off_s, n=cycles, background=True)
                log.warning("door alarm: %s", ", ".join(sorted(active)))

    def failure_state(self) -> None:
        """Put the lock at once where it must be when the agent stops or fails; pins kept.

        Fail-secure: relay off, locked. Fail-safe: relay off, released.
        """
        with self._lock:
            if self._closed:
                return
            self._to_failure_state()
            self.green.off()
            self._prompt_until = -math.inf

    def _to_failure_state(self) -> None:
        if self.settings.fail_safe:
            self.relay.on()  # logical "released" = coil de-energised
        else:
            self.relay.off()
        self.unlocked_until = -math.inf

    def close(self) -> None:
        """Relay to its failure state, everything else off, pins released. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            _quietly(self._to_failure_state)
            for dev in (self.buzzer, self.green, self.red):
                _quietly(dev.off)
            self._closed = True
            for dev in (self.relay, self.buzzer, self.green, self.red):
                _quietly(dev.close)
        state = "released: fail-safe" if self.settings.fail_safe else "locked"
        log.info("door closed: relay off (door %s), pins released", state)

    def __enter__(self) -> "Door":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # closing must go on with the other devices
        log.warning("door: %s failed while shutting down", getattr(fn, "__qualname__", fn), exc_info=True)
