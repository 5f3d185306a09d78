"""The door's outputs: the only edge module that imports gpiozero.

Pins come from config (BCM numbering). The pin driver comes from
``pin_factory`` or, when None, from gpiozero's default, which honours the
``GPIOZERO_PIN_FACTORY`` environment variable (``mock`` on a laptop). The code
never forces a mock: on a Pi it drives real pins.

Fail-secure: the relay starts off, and :meth:`Door.close` (called on stop,
SIGTERM and unhandled errors by the agent) switches it off before releasing the
pins. Releasing an output turns the pin into an input; active-low relay boards
carry their own pull-up, so a released pin leaves the lock shut.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from gpiozero import LED, Buzzer, DigitalOutputDevice, GPIOZeroError

from edge.config import DoorConfig
from edge.errors import DoorError

log = logging.getLogger(__name__)


class Door:
    """Relay (lock), buzzer and two LEDs.

    ``grant()`` and ``deny()`` return at once; the timings run on gpiozero's
    background threads, so the camera loop never waits for the lock.
    """

    def __init__(self, settings: DoorConfig, *, pin_factory: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self.relay_on_at: float | None = None
        self.grants = 0
        self.denials = 0
        devices: list[Any] = []
        try:
            # Relay first: if a later pin fails, the lock is already claimed in its off state.
            self.relay = DigitalOutputDevice(
                settings.relay_pin, active_high=settings.relay_active_high, initial_value=False, pin_factory=pin_factory
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
                _quietly(dev.off)
                _quietly(dev.close)
            raise DoorError(
                f"cannot claim the door's GPIO pins ({type(err).__name__}: {err}); on a machine without GPIO "
                "set GPIOZERO_PIN_FACTORY=mock"
            ) from err
        log.info(
            "door ready: relay BCM %d (%s), buzzer BCM %d, LEDs BCM %d/%d",
            settings.relay_pin,
            "active-high" if settings.relay_active_high else "active-low",
            settings.buzzer_pin,
            settings.green_led_pin,
            settings.red_led_pin,
        )

    @property
    def unlocked(self) -> bool:
        return bool(self.relay.is_active) if not self._closed else False

    def grant(self) -> float:
        """Release the lock for unlock_s, one short beep, green LED; returns the monotonic time the relay went on.

        A grant while the lock is already released restarts the unlock time
        without a click (the relay stays on).
        """
        s = self.settings
        with self._lock:
            if self._closed:
                raise DoorError("the door is closed (agent stopping)")
            self.red.off()
            self.relay.blink(on_time=s.unlock_s, off_time=0, n=1, background=True)
            switched_at = self._clock()
            self.green.blink(on_time=s.unlock_s, off_time=0, n=1, background=True)
            self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=1, background=True)
            self.relay_on_at = switched_at
            self.grants += 1
        return switched_at

    def deny(self) -> None:
        """Two short beeps and the red LED; the lock stays shut."""
        s = self.settings
        with self._lock:
            if self._closed:
                return
            if not self.relay.is_active:
                self.green.off()
            self.red.blink(on_time=s.deny_led_s, off_time=0, n=1, background=True)
            self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=2, background=True)
            self.denials += 1

    def lock_now(self) -> None:
        """Relay off at once (fail-secure path), pins kept."""
        with self._lock:
            if not self._closed:
                self.relay.off()
                self.green.off()

    def close(self) -> None:
        """Relay off, everything off, pins released. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for dev in (self.relay, self.buzzer, self.green, self.red):
                _quietly(dev.off)
            for dev in (self.relay, self.buzzer, self.green, self.red):
                _quietly(dev.close)
        log.info("door closed: relay off, pins released")

    def __enter__(self) -> "Door":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # closing must go on with the other devices
        log.warning("door: %s failed while shutting down", getattr(fn, "__qualname__", fn), exc_info=True)
