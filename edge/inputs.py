"""The door's inputs: request-to-exit button, door contact, tamper switch (gpiozero), and what they mean.

Three layers, so that the rules can be tested without pins or threads:

- :class:`DoorMonitor` -- PURE: input changes and clock ticks in, door events
  (exit request, forced open, held open, tamper) and the set of active alarm
  causes out. Every call takes the time explicitly.
- :class:`DoorInputs` -- the pins. gpiozero calls back on its own thread; the
  callback only stamps the change and hands it to a listener.
- :class:`DoorWatch` -- one thread: takes changes off a queue, runs the
  monitor, opens the door for an exit request, sets the door's alarms and
  hands every event to ``on_event`` (the agent records it in the outbox).

Wiring: each input is a switch between its pin and ground, with the Pi's
internal pull-up, so a closed switch reads low. ``*_contact`` / ``contact_type``
says whether the switch is closed (``no``: only while pressed / door open /
tampered) or open (``nc``) in the active state. With ``nc`` a cut wire reads
as the alarm state, which is why door contacts and tamper switches use it.

Forced open: the door contact opens later than ``open_grace_s`` after the
last grant's unlock time ran out (grants by face, QR or exit button all count).
The door's ``unlocked_until`` is read when the change is processed, a few
milliseconds after it happened; a grant in those milliseconds is the only way
to misjudge an opening.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gpiozero import DigitalInputDevice, GPIOZeroError

from edge.config import DoorConfig
from edge.door import Door
from edge.errors import DoorError
from models.messages import Decision, EntryEvent, EventKind

log = logging.getLogger(__name__)

EXIT, CONTACT, TAMPER = "exit", "door_open", "tamper"
"""Input names; each input's logical value is: exit button pressed, door open, enclosure tampered."""

REASON_EXIT = "request-to-exit button"
REASON_FORCED = "door opened without a grant or exit request"
REASON_TAMPER = "enclosure tamper switch"


@dataclass(frozen=True, slots=True)
class InputChange:
    name: str
    active: bool
    at: float


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """Something at the door worth an entry record (always without a worker)."""

    kind: EventKind
    decision: Decision
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Step:
    events: tuple[DoorEvent, ...] = ()
    open_door: bool = False


@dataclass
class DoorMonitor:
    """The rules of the door's inputs; pure (no pins, no threads, no clock of its own)."""

    settings: DoorConfig
    alarms: frozenset[str] = frozenset()
    opened_at: float | None = None
    held_reported: bool = False
    last_exit_recorded: float | None = None
    _causes: set[str] = field(default_factory=set)

    def start(self, states: dict[str, bool], now: float) -> Step:
        """The inputs' states when the agent starts: an open door starts the held-open timer, tamper alarms."""
        if states.get(CONTACT):
            log.warning("the door is open at start; held-open alarm after %.0f s", self.settings.held_open_s)
            self.opened_at = now
        if states.get(EXIT):
            log.warning("the exit button reads pressed at start (stuck, or exit_contact is wrong); ignored")
        if states.get(TAMPER):
            return self.change(InputChange(TAMPER, True, now), unlocked_until=now)
        return Step()

    def change(self, change: InputChange, unlocked_until: float) -> Step:
        s = self.settings
        t = change.at
        if change.name == EXIT:
            if not change.active:
                return Step()
            # Every press opens; pressing again while it is open is not a new exit to record.
            if self.last_exit_recorded is not None and t - self.last_exit_recorded < s.unlock_s:
                return Step(open_door=True)
            self.last_exit_recorded = t
            return Step((DoorEvent(EventKind.EXIT_REQUEST, Decision.GRANTED, REASON_EXIT, t),), open_door=True)
        if change.name == CONTACT:
            if not change.active:
                self.opened_at, self.held_reported = None, False
                self._clear("forced_open", "held_open")
                return Step()
            if self.opened_at is not None:
                return Step()  # already open (a repeated edge)
            self.opened_at = t
            if t > unlocked_until + s.open_grace_s:
                self._raise("forced_open")
                return Step((DoorEvent(EventKind.FORCED_OPEN, Decision.DENIED, REASON_FORCED, t),))
            return Step()
        if change.name == TAMPER:
            if not change.active:
                self._clear("tamper")
                return Step()
            if "tamper" in self._causes:
                return Step()
            self._raise("tamper")
            return Step((DoorEvent(EventKind.TAMPER, Decision.DENIED, f"{REASON_TAMPER} opened", t),))
        raise ValueError(f"unknown input {change.name!r}")

    def tick(self, now: float) -> Step:
        """Timers: the held-open alarm."""
        s = self.settings
        if self.opened_at is None or self.held_reported or now - self.opened_at < s.held_open_s:
            return Step()
        self.held_reported = True
        self._raise("held_open")
        reason = f"door held open longer than {s.held_open_s:g} s"
        return Step((DoorEvent(EventKind.HELD_OPEN, Decision.DENIED, reason, now),))

    def next_deadline(self) -> float | None:
        """When tick() may next have something to say (None: only an input change can)."""
        if self.opened_at is None or self.held_reported:
            return None
        return self.opened_at + self.settings.held_open_s

    def _raise(self, cause: str) -> None:
        self._causes.add(cause)
        self.alarms = frozenset(self._causes)

    def _clear(self, *causes: str) -> None:
        self._causes.difference_update(causes)
        self.alarms = frozenset(self._causes)


class DoorInputs:
    """The fitted inputs (exit button, door contact, tamper switch) as gpiozero devices.

    ``listener(InputChange)`` is called on gpiozero's thread (the caller's
    thread with MockFactory); it must only hand the change on.
    """

    def __init__(
        self,
        settings: DoorConfig,
        *,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
        listener: Callable[[InputChange], None] | None = None,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self._clock = clock
        self._devices: dict[str, tuple[DigitalInputDevice, bool]] = {}  # name -> (device, active when closed)
        wanted = [
            (EXIT, settings.exit_pin, settings.exit_contact),
            (CONTACT, settings.contact_pin, settings.contact_type),
            (TAMPER, settings.tamper_pin, settings.tamper_contact),
        ]
        try:
            for name, pin, contact in wanted:
                if pin is None:
                    continue
                bounce = settings.bounce_s or None
                dev = DigitalInputDevice(pin, pull_up=True, bounce_time=bounce, pin_factory=pin_factory)
                active_closed = contact == "no"
                self._devices[name] = (dev, active_closed)
                dev.when_activated = lambda _d=None, n=name: self._changed(n, closed=True)
                dev.when_deactivated = lambda _d=None, n=name: self._changed(n, closed=False)
        except (GPIOZeroError, OSError, ImportError) as err:
            self.close()
            raise DoorError(
                f"cannot claim the door's input pins ({type(err).__name__}: {err}); on a machine without GPIO "
                "set GPIOZERO_PIN_FACTORY=mock"
            ) from err

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._devices)

    def states(self) -> dict[str, bool]:
        """Each fitted input's logical state now (exit pressed, door open, tampered)."""
        return {name: bool(dev.is_active) == active_closed for name, (dev, active_closed) in self._devices.items()}

    def _changed(self, name: str, *, closed: bool) -> None:
        _dev, active_closed = self._devices[name]
        change = InputChange(name, closed == active_closed, self._clock())
        listener = self.listener
        if listener is not None:
            listener(change)

    def close(self) -> None:
        for dev, _ in self._devices.values():
            try:
                dev.when_activated = dev.when_deactivated = None
                dev.close()
            except Exception:  # closing goes on with the other inputs
                log.warning("door inputs: closing %r failed", dev, exc_info=True)
        self._devices.clear()


class DoorWatch:
    """Runs the door's inputs against the monitor on one thread and acts: exit opens, alarms sound, events go out.

    Construct to claim the pins (raises DoorError), ``start()`` to begin,
    ``close()`` to stop and release them. ``on_event(DoorEvent)`` runs on the
    watch thread.
    """

    def __init__(
        self,
        settings: DoorConfig,
        door: Door,
        *,
        on_event: Callable[[DoorEvent], None],
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.door = door
        self.on_event = on_event
        self.monitor = DoorMonitor(settings)
        self._clock = clock
        self._queue: queue.Queue[InputChange | None] = queue.Queue()
        self.inputs = DoorInputs(settings, pin_factory=pin_factory, clock=clock, listener=self._queue.put)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> "DoorWatch":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="door-watch", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the input pins; safe to call twice."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        self.inputs.close()

    def _run(self) -> None:
        self._apply(self.monitor.start(self.inputs.states(), self._clock()))
        while not self._stop.is_set():
            deadline = self.monitor.next_deadline()
            wait = 0.5 if deadline is None else min(max(deadline - self._clock(), 0.005), 0.5)
            try:
                change = self._queue.get(timeout=wait)
            except queue.Empty:
                change = None
            if self._stop.is_set():
                return
            try:
                if change is not None:
                    self._apply(self.monitor.change(change, self.door.unlocked_until))
                self._apply(self.monitor.tick(self._clock()))
            except Exception:  # one bad step must not end the watch: the next change may matter more
                log.exception("door watch: handling %s failed", change)

    def _apply(self, step: Step) -> None:
        if step.open_door:
            self.door.grant()
        self.door.set_alarms(self.monitor.alarms)
        for event in step.events:
            log.info("door: %s (%s)", event.kind.value, event.reason)
            try:
                self.on_event(event)
            except Exception:
                log.exception("door watch: recording %s failed", event.kind.value)


def entry_for(event: DoorEvent, *, station_id: str, gallery_version: int) -> EntryEvent:
    """The entry record of a door event (no worker: the inputs cannot say who)."""
    return EntryEvent(
        station_id=station_id,
        kind=event.kind,
        decision=event.decision,
        reason=event.reason,
        gallery_version=gallery_version,
    )
