"""The edge agent: frames -> pipeline -> gate (policy + liveness) -> door and outbox, with sync in the background.

Door events that are not faces come in beside the frames: the exit button,
door contact and tamper switch through edge.inputs.DoorWatch (its own
thread), QR credentials through edge.qr.QrAccess (on the frame loop, per
``access.mode``). Every one of them that matters becomes an entry event.
Where a QR grant meets the face path (mode ``face_or_qr``), the gate decides:
one visit lets a worker in once, by whichever way came first
(:meth:`edge.gate.DoorGate.grant_elsewhere`).

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
from dataclasses import replace
from typing import Any, Callable, Iterable

import numpy as np

from core.faces import FaceEngine
from edge.camera import Frame, FrameSource, IterableSource, open_source
from edge.config import EdgeSettings
from edge.door import Door
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.inputs import DoorEvent, DoorWatch, entry_for
from edge.pipeline import FramePipeline, run_frame
from edge.policy import Verdict
from edge.qr import Claim, CredentialVerifier, FrameStep, QrAccess, QrDecision
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models.messages import Decision, EntryEvent, EventKind, Scores

log = logging.getLogger(__name__)

VerdictCallback = Callable[[Verdict, "float | None"], None]
_MAX_DECISION_MS = 3_600_000.0


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
        self._claim: tuple[Claim, DoorGate] | None = None  # qr_then_face: the claim and its own fresh gate
        self._claim_gate: DoorGate | None = None  # the gate of the claim decided last (its liveness evidence)
        self.sync: StationSync | None = None
        self.pipeline: FramePipeline | None = None
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
            self.access = self._build_access(self.store)
            self.source = self._open_frames()  # before the models: a wrong camera path fails fast
            if self.engine is None:
                self.engine = FaceEngine()
            self.engine.load()
            self.pipeline = FramePipeline(self.engine, self.settings.detection, self.holder)
            self.sync = StationSync(
                self.settings, self.store, build_link(self.settings), gallery=self.holder, health=self._health
            )
            self.sync.start()
            self.watch.start()  # last: its events go to the outbox through sync
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
                self.door.failure_state()
            raise
        finally:
            self._idle.set()
        return n

    def process_frame(self, frame: Frame) -> Verdict | None:
        assert self.pipeline is not None
        self._frame_t = frame.t
        self.counts["frames"] += 1
        gallery = self.holder.gallery
        step = self.access.step(frame.rgb, frame.t, gallery) if self.access else FrameStep(face_gallery=gallery)
        if step.qr is not None:
            self._act_qr(step.qr, frame)
        if step.face_gallery is None:
            return None
        if step.claim is not None:
            verdict, gate = self._verify_claim(step, frame), self._claim_gate
            kind = EventKind.QR
        else:
            verdict, gate = run_frame(self.pipeline, self.gate, frame.rgb, frame.t), self.gate
            kind = EventKind.FACE
        if verdict is not None:
            self._act(verdict, kind, gate.liveness_scores() if gate is not None else None)
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
    def _act(self, verdict: Verdict, kind: EventKind = EventKind.FACE, liveness: dict[str, Any] | None = None) -> None:
        assert self.door is not None and self.sync is not None
        if self._stop.is_set():
            # Fail-secure: once stopping, nothing opens the door (and nothing is recorded as if it had).
            log.info("stopping: %s for %s not acted on", verdict.decision.value, verdict.identity or "unknown")
            return
        relay_at: float | None = None
        if verdict.open_door:
            relay_at = self.door.grant()
        elif verdict.decision in (Decision.DENIED, Decision.SPOOF):
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
                kind=kind,
                decision=verdict.decision,
                worker_id=verdict.identity,
                reason=verdict.reason,
                scores=Scores(
                    distance=_score(verdict.distance),
                    second_distance=_score(verdict.second_distance),
                    frames=min(verdict.frames, 10_000),
                    face_px=min(verdict.face_px, 100_000),
                    **(liveness or {}),
                ),
                decision_ms=min(max(decided_ms, 0.0), _MAX_DECISION_MS),
                gallery_version=self.holder.gallery.version,
            )
            self.sync.enqueue(event)
            self.counts["recorded"] += 1
        if self.on_verdict is not None:
            self.on_verdict(verdict, latency_ms)

    def _verify_claim(self, step: FrameStep, frame: Frame) -> Verdict | None:
        """qr_then_face: the face path against the claimed worker only, through a gate of the claim's own."""
        assert self.pipeline is not None and self.access is not None and step.claim is not None
        if self._claim is None or self._claim[0] != step.claim:
            # A fresh policy and liveness check per claim: a visit or cooldown from before must not count.
            gate = DoorGate(self.settings.policy, self.settings.liveness, clock=lambda: self._frame_t)
            self._claim = (step.claim, gate)
        gate = self._claim_gate = self._claim[1]
        # As edge.pipeline.run_frame, with the one-worker gallery.
        face = self.pipeline.analyse(
            frame.rgb, t=frame.t, encode=gate.wants_encoding, landmarks=gate.wants_landmarks, gallery=step.face_gallery,
            eye_upscale_px=gate.eye_upscale_px,
        )
        verdict = gate.observe(face)
        if verdict is None:
            return None
        self.access.end_claim()
        self._claim = None
        cid = step.claim.credential_id
        outcome = {Decision.GRANTED: "face verified 1:1", Decision.DENIED: "face does not match (1:1)"}
        reason = f"credential {cid}: {outcome.get(verdict.decision, 'face check failed')}: {verdict.reason}"
        return replace(verdict, identity=step.claim.worker_id, reason=reason[:200])

    def _act_qr(self, decision: QrDecision, frame: Frame) -> None:
        """A door decision made by a QR credential: open or refuse, and record it."""
        assert self.door is not None and self.sync is not None
        if self._stop.is_set():
            return
        if decision.open_door and decision.worker_id is not None:
            # The face path may have let this worker in during this visit, or be about to: one visit, one entry.
            admit = self.gate.grant_elsewhere(decision.worker_id)
            if not admit.open_door:
                self.counts["qr_same_visit"] += 1
                log.info("qr granted %s: not acted on, %s", decision.worker_id, admit.reason)
                return
            if not admit.record:
                decision = replace(decision, record=False, reason=f"{decision.reason} ({admit.reason})"[:200])
        if decision.open_door:
            self.door.grant()
        else:
            self.door.deny()
        self.counts[f"qr_{decision.decision.value}"] += 1
        log.info("qr %s %s: %s", decision.decision.value, decision.worker_id or "-", decision.reason)
        if not decision.record:
            return
        decided_ms = (self.clock() - frame.t) * 1000.0
        self.sync.enqueue(
            EntryEvent(
                station_id=self.settings.station_id,
                kind=EventKind.QR,
                decision=decision.decision,
                worker_id=decision.worker_id,
                reason=decision.reason,
                decision_ms=min(max(decided_ms, 0.0), _MAX_DECISION_MS),
                gallery_version=self.holder.gallery.version,
            )
        )
        self.counts["recorded"] += 1

    def _on_door_event(self, event: DoorEvent) -> None:
        """Exit request, forced or held open, tamper: on the door watch's thread, into the outbox."""
        if self.sync is None:
            return
        self.counts[event.kind.value] += 1
        version = self.holder.gallery.version
        self.sync.enqueue(entry_for(event, station_id=self.settings.station_id, gallery_version=version))
        self.counts["recorded"] += 1

    # -- helpers --------------------------------------------------------------------
    def _build_access(self, store: EdgeStore) -> QrAccess:
        a = self.settings.access
        verifier = None
        if a.mode != "face":
            verifier = CredentialVerifier(
                a.qr_public_keys,
                worker=store.worker,
                grantable=lambda worker_id: worker_id in self.holder.gallery.identities,
                clock_skew_s=a.clock_skew_s,
            )
        return QrAccess(a, verifier)

    def wait_for_gallery(self, min_size: int, timeout: float) -> bool:
        """Wait until at least ``min_size`` workers can be matched (True) or the timeout passes (False)."""
        return self.holder.wait_for(lambda g: len(g.identities) >= min_size, timeout)

    @property
    def outbox_depth(self) -> int:
        return self.store.depth() if self.store is not None else 0


def _score(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 10.0)
