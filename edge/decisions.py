"""What the door does with a decision: open or refuse, count and log it, record it as an entry event.

Three kinds of decision reach the door through :class:`DoorActions` (built by
edge/agent.py once the door, sync and station config exist): the gate's face
verdicts (:meth:`~DoorActions.face`, also the 1:1 check of a QR claim), QR
credential decisions (:meth:`~DoorActions.qr`), and the door's own events,
exit button, forced or held open, tamper (:meth:`~DoorActions.door_event`, on
the door watch's thread). Outside the opening hours (edge/station_config.py) a
grant is refused, and recorded; once the agent is stopping nothing opens the
door, and nothing is recorded as if it had.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import replace
from typing import Any, Callable

from edge.door import Door
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.health import EdgeMetrics
from edge.inputs import DoorEvent, entry_for
from edge.policy import Verdict
from edge.qr import QrDecision
from edge.snapshots import SnapshotTaker
from edge.station_config import StationConfigApplier, refuse_when_closed
from models.messages import Decision, EntryEvent, EventKind, Scores

log = logging.getLogger("edge.agent")  # these lines kept the logger name they had in edge/agent.py

VerdictCallback = Callable[[Verdict, "float | None"], None]
_MAX_DECISION_MS = 3_600_000.0


class DoorActions:
    """Acts on one station's decisions: door first, then counts, metrics, the log line and the outbox.

    ``enqueue`` puts an entry event in the outbox (edge.sync.StationSync.enqueue:
    False when it is full); ``counts`` is the agent's own Counter; ``stopping``
    is set once the agent stops; ``clock`` is the clock the relay is timed on.
    """

    def __init__(
        self,
        station_id: str,
        door: Door,
        enqueue: Callable[[EntryEvent], bool],
        *,
        gate: DoorGate,
        holder: GalleryHolder,
        configs: StationConfigApplier | None,
        snapshots: SnapshotTaker | None,
        metrics: EdgeMetrics,
        counts: Counter[str],
        clock: Callable[[], float],
        stopping: threading.Event,
        on_verdict: VerdictCallback | None = None,
    ) -> None:
        self.station_id = station_id
        self.door = door
        self.enqueue = enqueue
        self.gate = gate
        self.holder = holder
        self.configs = configs
        self.snapshots = snapshots
        self.metrics = metrics
        self.counts = counts
        self.clock = clock
        self.stopping = stopping
        self.on_verdict = on_verdict

    def face(self, verdict: Verdict, kind: EventKind = EventKind.FACE, liveness: dict[str, Any] | None = None) -> None:
        """A verdict of a gate: open, buzz or nothing, and record it if the verdict says so."""
        if self.stopping.is_set():
            # Fail-secure: once stopping, nothing opens the door (and nothing is recorded as if it had).
            log.info("stopping: %s for %s not acted on", verdict.decision.value, verdict.identity or "unknown")
            return
        closed = self.configs.closed_reason() if verdict.open_door and self.configs is not None else None
        if closed:  # outside the opening hours (the exit button, edge/inputs.py, still opens)
            verdict = refuse_when_closed(verdict, closed)
            if verdict.identity is not None:
                self.gate.refused(verdict.identity)  # so their entry just after opening time is recorded
        relay_at: float | None = None
        if verdict.open_door:
            relay_at = self.door.grant()
        elif verdict.decision in (Decision.DENIED, Decision.SPOOF):
            self.door.deny()
        latency_ms = (relay_at - verdict.visit_started_at) * 1000.0 if relay_at is not None else None
        self.counts[verdict.decision.value] += 1
        self.metrics.decided(kind, verdict.decision)
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
                station_id=self.station_id,
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
            queued = self.enqueue(event)
            if queued and self.snapshots is not None:  # behind its entry in the outbox, refusals only
                self.snapshots.after_entry(event, at=verdict.decided_at)
            self.counts["recorded"] += 1
        if self.on_verdict is not None:
            self.on_verdict(verdict, latency_ms)

    def prompt(self, gate: DoorGate) -> None:
        """After each frame of ``gate``: "please move" once per visit for a grant held for liveness; stop it after.

        Not an entry event (nothing was decided), so only logged and counted.
        """
        held = gate.prompt_due()
        if held is None:
            if gate.held is None:
                self.door.end_prompt()  # decided or ended: a pattern still showing stops (a no-op otherwise)
            return
        if self.stopping.is_set() or not self.door.prompt():
            return
        self.counts["liveness_prompts"] += 1
        name = self.holder.names.get(held.identity or "", "")
        live = gate.liveness_result
        log.info(
            "prompt: asked %s%s to move (matched, no head movement or blink yet, %.1f s into the liveness check)",
            held.identity, f" ({name})" if name else "", live.elapsed_s if live is not None else 0.0,
        )

    def qr(self, decision: QrDecision, frame_t: float) -> None:
        """A QR credential's decision (read from the frame of ``frame_t``): open or refuse, and record it."""
        if self.stopping.is_set():
            return
        closed = self.configs.closed_reason() if decision.open_door and self.configs is not None else None
        if closed:  # outside the opening hours: a valid credential is refused, and recorded
            reason = f"credential {decision.credential_id}: {closed}"[:200]
            decision = replace(decision, decision=Decision.DENIED, record=True, reason=reason)
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
        self.metrics.decided(EventKind.QR, decision.decision)
        log.info("qr %s %s: %s", decision.decision.value, decision.worker_id or "-", decision.reason)
        if not decision.record:
            return
        decided_ms = (self.clock() - frame_t) * 1000.0
        self.enqueue(
            EntryEvent(
                station_id=self.station_id,
                kind=EventKind.QR,
                decision=decision.decision,
                worker_id=decision.worker_id,
                reason=decision.reason,
                decision_ms=min(max(decided_ms, 0.0), _MAX_DECISION_MS),
                gallery_version=self.holder.gallery.version,
            )
        )
        self.counts["recorded"] += 1

    def door_event(self, event: DoorEvent) -> None:
        """Exit request, forced or held open, tamper: on the door watch's thread, into the outbox."""
        self.counts[event.kind.value] += 1
        version = self.holder.gallery.version
        self.enqueue(entry_for(event, station_id=self.station_id, gallery_version=version))
        self.counts["recorded"] += 1


def _score(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 10.0)
