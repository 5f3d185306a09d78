"""The edge agent: frames -> pipeline -> gate (policy + liveness) -> door and outbox, with sync in the background.

Door events that are not faces come in beside the frames: the exit button,
door contact and tamper switch through edge.inputs.DoorWatch (its own
thread), QR credentials through edge.qr.QrAccess (on the frame loop, per
``access.mode``). Every one of them that matters becomes an entry event.
Where a QR grant meets the face path (mode ``face_or_qr``), the gate decides:
one visit lets a worker in once, by whichever way came first
(:meth:`edge.gate.DoorGate.grant_elsewhere`). What the door does with each
decision (open or refuse, count, log, record) is edge/decisions.py; the QR
side of the frame loop (QrAccess, qr_then_face's 1:1 check) is edge/access.py.

The door works from the local enrollment cache from the first frame on; MQTT
only has to be up for new enrollments to arrive and for entries to leave the
outbox (they wait in SQLite until then).

Times: each frame carries the monotonic time its source delivered it, and the
policy runs on those times, so "first frame to relay" (``decision_ms``) counts
from when the camera produced the person's first usable frame, including the
time the detector spent on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np

from core.faces import FaceEngine
from edge.access import ClaimCheck, build_access
from edge.camera import Frame, FrameSource, IterableSource, open_source
from edge.config import EdgeSettings
from edge.decisions import DoorActions, VerdictCallback
from edge.door import Door
from edge.encoders import EncoderPool, auto_processes
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.health import EdgeMetrics, HealthServer, health_report, serve_health
from edge.inputs import DoorEvent, DoorWatch
from edge.pipeline import FramePipeline, run_frame
from edge.policy import Verdict
from edge.qr import FrameStep, QrAccess
from edge.snapshots import SnapshotTaker
from edge.station_config import StationConfigApplier
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from edge.watchdog import Watchdog
from models.messages import EventKind

log = logging.getLogger(__name__)

# No frame for this long while running: the heartbeat reports the camera as stalled.
_CAMERA_STALL_S = 5.0


class EdgeAgent:
    """One station: ``start()``, then ``run()`` (blocking) until the frames end or ``stop()``.

    ``frames``: a FrameSource, or any iterable of RGB uint8 arrays / Frames
    (wrapped in IterableSource, arrays stamped with ``clock()`` as they are
    taken); None opens ``settings.camera``. ``pin_factory``: a gpiozero pin
    factory (None = gpiozero's default, i.e. GPIOZERO_PIN_FACTORY). ``engine``:
    a FaceEngine to share (loaded in start()). ``clock``: stamps frames the
    agent opens or wraps and times the relay switch; the policy runs on the
    frames' own timestamps. ``on_verdict(verdict, latency_ms)`` is called on
    the frame loop's thread after the door acted; ``latency_ms`` is first
    usable frame -> relay on, None when the door did not open.
    """

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        frames: FrameSource | Iterable[np.ndarray | Frame] | None = None,
        pin_factory: Any = None,
        engine: FaceEngine | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_verdict: VerdictCallback | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_verdict = on_verdict
        self.holder = GalleryHolder()
        self.counts: Counter[str] = Counter()
        self.engine = engine
        self.store: EdgeStore | None = None
        self.door: Door | None = None
        self.watch: DoorWatch | None = None
        self.access: QrAccess | None = None
        self.claims = ClaimCheck(settings.policy, settings.liveness, clock=lambda: self._frame_t)  # qr_then_face
        self.actions: DoorActions | None = None  # acts on every decision (edge/decisions.py); built by start()
        self.sync: StationSync | None = None
        self.pipeline: FramePipeline | None = None
        self.configs: StationConfigApplier | None = None  # the server's mode and opening hours (edge/station_config.py)
        self.snapshots: SnapshotTaker | None = None  # only where snapshots.enabled (edge/snapshots.py)
        # Policy and liveness judge on the frames' own timestamps (see the module docstring).
        self.gate = DoorGate(settings.policy, settings.liveness, clock=lambda: self._frame_t)
        self.policy = self.gate.policy
        self._frames = frames
        self._pin_factory = pin_factory
        self.source: FrameSource | None = None
        self._frame_t = 0.0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = False
        self._run_thread: threading.Thread | None = None
        self.metrics = EdgeMetrics(self)  # read at scrape time, except one increment per decision
        self.watchdog = Watchdog()  # systemd's READY/WATCHDOG/STOPPING; a no-op without NOTIFY_SOCKET
        self.health_http: HealthServer | None = None
        self.encoders: EncoderPool | None = None  # encodings on the other cores (edge/encoders.py)

    # -- life cycle -------------------------------------------------------------
    def start(self) -> "EdgeAgent":
        """Open the store, claim the pins, load the models, start sync, open the camera."""
        try:
            self.store = EdgeStore.open(self.settings.data_dir)
            self.holder.swap(self.store.load_gallery(), self.store.display_names())
            log.info("enrollment cache: %d worker(s), version %d", len(self.holder.gallery.identities), self.holder.gallery.version)
            self.door = Door(self.settings.door, pin_factory=self._pin_factory, clock=self.clock)
            self.watch = DoorWatch(
                self.settings.door, self.door, on_event=self._on_door_event, pin_factory=self._pin_factory,
                clock=self.clock,
            )
            self.configs = StationConfigApplier(self.settings.station_id, self.store, self.settings.access)
            self.configs.load()  # the config applied last, until the server's retained one arrives
            self.access = build_access(self.settings.access, self.store, self.holder, self.configs)
            self.source = self._open_frames()  # before the models: a wrong camera path fails fast
            if self.engine is None:
                self.engine = FaceEngine()
            self.engine.load()
            self.pipeline = FramePipeline(self.engine, self.settings.detection, self.holder)
            workers = auto_processes(self.settings.detection.encoder_processes)
            if workers:
                try:
                    self.encoders = self.pipeline.encoders = EncoderPool(workers).start()
                except Exception as err:  # the door works without them, one encoding at a time
                    log.error("encoder processes not started (%s): encoding in the frame loop's process", err)
            self.sync = StationSync(
                self.settings, self.store, build_link(self.settings), gallery=self.holder, health=self._health
            )
            if self.settings.snapshots.enabled:
                self.snapshots = SnapshotTaker(
                    self.settings.snapshots, self.settings.station_id, self.store, wake=self.sync.outbox.wake
                )
            self.actions = DoorActions(
                self.settings.station_id, self.door, self.sync.enqueue, gate=self.gate, holder=self.holder,
                configs=self.configs, snapshots=self.snapshots, metrics=self.metrics, counts=self.counts,
                clock=self.clock, stopping=self._stop, on_verdict=self.on_verdict,
            )
            self.configs.attach(self.sync.link)  # before the link starts: the retained config comes on subscribing
            self.sync.start()
            self.watch.start()  # last: its events go to the outbox through sync
            health = self.settings.health
            self.health_http = serve_health(health, self.metrics, lambda: health_report(self, health.stale_after_s))
            self.watchdog.ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _open_frames(self) -> FrameSource:
        frames = self._frames
        if frames is None:
            return open_source(self.settings.camera, clock=self.clock)
        if isinstance(frames, FrameSource):
            return frames
        return IterableSource(frames, clock=self.clock)

    def run(self, max_frames: int | None = None) -> int:
        """Process frames until the source ends, ``max_frames`` were processed, or stop(); returns the count.

        Any error on the way out switches the relay off first (fail-secure).
        """
        if self.source is None or self.pipeline is None:
            raise RuntimeError("call start() before run()")
        n = 0
        self._run_thread = threading.current_thread()
        self._idle.clear()
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                self.process_frame(frame)
                self.watchdog.frame_done()  # only a loop that makes progress keeps systemd's watchdog fed
                n += 1
                if max_frames is not None and n >= max_frames:
                    break
        except BaseException:
            if self.door is not None:
                self.door.failure_state()
            raise
        finally:
            self._idle.set()
        return n

    def process_frame(self, frame: Frame) -> Verdict | None:
        assert self.pipeline is not None and self.actions is not None
        self._frame_t = frame.t
        self.counts["frames"] += 1
        self._follow_config()
        gallery = self.holder.gallery
        step = self.access.step(frame.rgb, frame.t, gallery) if self.access else FrameStep(face_gallery=gallery)
        if step.qr is not None:
            self.actions.qr(step.qr, frame.t)
        if step.face_gallery is None:
            return None
        if step.claim is not None:
            assert self.access is not None
            verdict, gate = self.claims.verify(self.pipeline, self.access, step, frame), self.claims.gate
            kind = EventKind.QR
        else:
            verdict, gate = run_frame(self.pipeline, self.gate, frame.rgb, frame.t), self.gate
            kind = EventKind.FACE
        if self.snapshots is not None:
            self.snapshots.see(frame.rgb, self.pipeline.last_box, frame.t)
        if verdict is not None:
            self.actions.face(verdict, kind, gate.liveness_scores() if gate is not None else None)
        if gate is not None:
            self.actions.prompt(gate)  # "please move" for a worker held for liveness, once per visit
        return verdict

    def _health(self) -> dict[str, str]:
        """Camera and door state for the heartbeat (called from the sync thread)."""
        if self.counts["frames"] == 0:
            camera = "starting"
        else:
            camera = "ok" if self.clock() - self._frame_t < _CAMERA_STALL_S else "stalled"
        door = "unknown" if self.door is None else ("unlocked" if self.door.unlocked else "locked")
        return {"camera": camera, "door": door}

    def stop(self) -> None:
        """Stop everything, relay off first. Safe to call twice and from another thread."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.watchdog.stopping()
        if self.door is not None:
            self.door.failure_state()
        if self.watch is not None:
            self.watch.close()  # no exit button grant after this...
            if self.door is not None:
                self.door.failure_state()  # ...nor one that slipped in while it stopped
        if self.source is not None:
            self.source.close()
        if threading.current_thread() is not self._run_thread:
            self._idle.wait(10.0)  # let a frame in progress finish and record its entry
        if self.door is not None:
            self.door.close()
        if self.configs is not None:
            self.configs.stop()
        if self.sync is not None:
            self.sync.stop()
        if self.health_http is not None:
            self.health_http.stop()
        if self.encoders is not None:
            self.encoders.close()
        if self.store is not None:
            self.store.close()
        log.info("agent stopped: %s", dict(self.counts))

    def __enter__(self) -> "EdgeAgent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- decisions (acted on in edge/decisions.py) -----------------------------------
    def _on_door_event(self, event: DoorEvent) -> None:
        """Exit request, forced or held open, tamper: on the door watch's thread, into the outbox."""
        if self.actions is not None:
            self.actions.door_event(event)

    # -- helpers --------------------------------------------------------------------
    def _follow_config(self) -> None:
        """Use the access mode the server set (edge/station_config.py); on the frame loop's thread, as QrAccess wants."""
        configs, access = self.configs, self.access
        if configs is None or access is None or access.mode == configs.mode:
            return
        log.info("access mode %s -> %s (station config v%s)", access.mode, configs.mode, configs.version)
        access.end_claim()  # a QR claim waiting for its face belongs to the old mode
        self.claims.forget()
        access.mode = configs.mode

    def wait_for_gallery(self, min_size: int, timeout: float) -> bool:
        """Wait until at least ``min_size`` workers can be matched (True) or the timeout passes (False)."""
        return self.holder.wait_for(lambda g: len(g.identities) >= min_size, timeout)

    @property
    def last_frame_age_s(self) -> float | None:
        """Seconds since the frame loop took its last frame; None before the first (edge/health.py)."""
        return None if self.counts["frames"] == 0 else self.clock() - self._frame_t

    @property
    def outbox_depth(self) -> int:
        return self.store.depth() if self.store is not None else 0

