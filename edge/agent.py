"""The edge agent: frames -> pipeline -> policy -> door and outbox, with sync in the background.

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
from edge.camera import Frame, FrameSource, IterableSource, open_source
from edge.config import EdgeSettings
from edge.door import Door
from edge.gallery import GalleryHolder
from edge.pipeline import FramePipeline
from edge.policy import DecisionPolicy, Verdict
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models.messages import Decision, EntryEvent, EventKind, Scores

log = logging.getLogger(__name__)

VerdictCallback = Callable[[Verdict, "float | None"], None]
_MAX_DECISION_MS = 3_600_000.0


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
        self.sync: StationSync | None = None
        self.pipeline: FramePipeline | None = None
        self.policy = DecisionPolicy(settings.policy, clock=lambda: self._frame_t)
        self._frames = frames
        self._pin_factory = pin_factory
        self.source: FrameSource | None = None
        self._frame_t = 0.0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = False
        self._run_thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------
    def start(self) -> "EdgeAgent":
        """Open the store, claim the pins, load the models, start sync, open the camera."""
        try:
            self.store = EdgeStore.open(self.settings.data_dir)
            self.holder.swap(self.store.load_gallery(), self.store.display_names())
            log.info("enrollment cache: %d worker(s), version %d", len(self.holder.gallery.identities), self.holder.gallery.version)
            self.door = Door(self.settings.door, pin_factory=self._pin_factory, clock=self.clock)
            self.source = self._open_frames()  # before the models: a wrong camera path fails fast
            if self.engine is None:
                self.engine = FaceEngine()
            self.engine.load()
            self.pipeline = FramePipeline(self.engine, self.settings.detection, self.holder)
            self.sync = StationSync(self.settings, self.store, build_link(self.settings), gallery=self.holder)
            self.sync.start()
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
                n += 1
                if max_frames is not None and n >= max_frames:
                    break
        except BaseException:
            if self.door is not None:
                self.door.lock_now()
            raise
        finally:
            self._idle.set()
        return n

    def process_frame(self, frame: Frame) -> Verdict | None:
        assert self.pipeline is not None
        self._frame_t = frame.t
        self.counts["frames"] += 1
        verdict = self.policy.observe(self.pipeline.process(frame.rgb))
        if verdict is not None:
            self._act(verdict)
        return verdict

    def stop(self) -> None:
        """Stop everything, relay off first. Safe to call twice and from another thread."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self.door is not None:
            self.door.lock_now()
        if self.source is not None:
            self.source.close()
        if threading.current_thread() is not self._run_thread:
            self._idle.wait(10.0)  # let a frame in progress finish and record its entry
        if self.door is not None:
            self.door.close()
        if self.sync is not None:
            self.sync.stop()
        if self.store is not None:
            self.store.close()
        log.info("agent stopped: %s", dict(self.counts))

    def __enter__(self) -> "EdgeAgent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- decisions ------------------------------------------------------------------
    def _act(self, verdict: Verdict) -> None:
        assert self.door is not None and self.sync is not None
        if self._stop.is_set():
            # Fail-secure: once stopping, nothing opens the door (and nothing is recorded as if it had).
            log.info("stopping: %s for %s not acted on", verdict.decision.value, verdict.identity or "unknown")
            return
        relay_at: float | None = None
        if verdict.open_door:
            relay_at = self.door.grant()
        elif verdict.decision == Decision.DENIED:
            self.door.deny()
        latency_ms = (relay_at - verdict.visit_started_at) * 1000.0 if relay_at is not None else None
        self.counts[verdict.decision.value] += 1
        name = self.holder.names.get(verdict.identity or "", "")
        log.info(
            "%s %s%s: %s (frames %d, distance %s)%s",
            verdict.decision.value,
            verdict.identity or "unknown",
            f" ({name})" if name else "",
            verdict.reason,
            verdict.frames,
            f"{verdict.distance:.3f}" if verdict.distance is not None else "-",
            f", relay {latency_ms:.0f} ms after the first frame" if latency_ms is not None else "",
        )
        if verdict.record:
            decided_ms = latency_ms if latency_ms is not None else (self.clock() - verdict.visit_started_at) * 1000.0
            event = EntryEvent(
                station_id=self.settings.station_id,
                kind=EventKind.FACE,
                decision=verdict.decision,
                worker_id=verdict.identity,
                reason=verdict.reason,
                scores=Scores(
                    distance=_score(verdict.distance),
                    second_distance=_score(verdict.second_distance),
                    frames=min(verdict.frames, 10_000),
                    face_px=min(verdict.face_px, 100_000),
                ),
                decision_ms=min(max(decided_ms, 0.0), _MAX_DECISION_MS),
                gallery_version=self.holder.gallery.version,
            )
            self.sync.enqueue(event)
            self.counts["recorded"] += 1
        if self.on_verdict is not None:
            self.on_verdict(verdict, latency_ms)

    # -- helpers --------------------------------------------------------------------
    def wait_for_gallery(self, min_size: int, timeout: float) -> bool:
        """Wait until at least ``min_size`` workers can be matched (True) or the timeout passes (False)."""
        return self.holder.wait_for(lambda g: len(g.identities) >= min_size, timeout)

    @property
    def outbox_depth(self) -> int:
        return self.store.depth() if self.store is not None else 0


def _score(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 10.0)
