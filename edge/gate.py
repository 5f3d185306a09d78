"""The door's final say: the policy names the worker, liveness says the face is real, both are needed.

Pure code with an injected clock: no models, pins or broker. Per frame the
agent hands in what the pipeline saw of the followed face (a
:class:`~edge.tracker.FaceFrame`, or None), and the gate

1. lets :class:`~edge.policy.DecisionPolicy` judge the identity (k agreeing
   frames, threshold, margin, cooldown, one grant per visit; its *visit* is
   the gate's visit too),
2. feeds the face's 68 landmarks to :class:`~edge.liveness.LivenessChecker`
   from the visit's first face on, so liveness usually has its answer by the
   time the policy has its k frames, and
3. combines the two into at most one verdict per frame:

========================  =========================  ================================
policy                    liveness                   verdict
========================  =========================  ================================
grant                     passed (or mode ``off``)   the grant: the door opens
grant                     pending                    held; released on the frame
                                                     liveness passes (``decided_at``
                                                     is that frame)
grant (held or new)       failed (time limit)        ``spoof``: door shut, recorded,
                                                     naming the worker whose face
                                                     was shown
denial                    any                        the denial, at once
nothing                   failed                     nothing: the door is shut anyway,
                                                     and a stranger standing still is
                                                     not an attack
========================  =========================  ================================

A visit that ends (the policy's ``visit_gap_s`` without a face) while a grant
is held drops it (counted in ``abandoned``, not recorded): the person left
before showing they were live. A grant held for ``prompt_after_s`` is due for
the door's "please move" prompt once per visit (:meth:`DoorGate.prompt_due`).

The gate also tells the pipeline what the next frame needs
(:attr:`DoorGate.wants_encoding`, :attr:`DoorGate.wants_landmarks`):
encodings until the policy grants, so each grant rests on ``frames_required``
encodings of different frames: on every frame while the latest match is near a
worker (within ``threshold + NEAR``), otherwise, a stranger, on every
``SLOW_EVERY``-th frame, and so after ``FULL_RATE_S`` without a grant (a later
grant is still possible); after a grant none, the worker is known. A frame whose
face was followed but not encoded reaches the policy as a copy of the latest
match when that copy cannot vote (the visit is granted, or the match is far):
the face counts as still there, and a stranger is denied as soon as before.
Landmarks are computed while liveness is undecided.

Two ways in, one entry (station mode ``face_or_qr``): a QR credential that
lets a worker in is announced with :meth:`DoorGate.grant_elsewhere`. Within
one visit a worker is let in once, by whichever way came first: the face path
does not grant a worker the credential let in during the current visit (or
one starting within ``visit_gap_s`` of it), a face grant held for liveness is
dropped, and a credential for a worker whose face already opened the door in
this visit neither opens it again nor is recorded. Grants by either way share
the policy's cooldown for what is recorded. Other workers are not affected.

Every verdict comes with the liveness evidence it rests on
(:attr:`DoorGate.evidence`), for the entry's scores.

Cooldown: the policy counts a grant it issued as the worker's last recorded
entry even when the gate turned it into a spoof, or the door refused it
outside the opening hours (:meth:`DoorGate.refused`). So that the audit log does
not lose the worker's real entry that follows, a grant the policy marks "within
cooldown" is recorded anyway when the worker's last recorded event here was a
spoof or such a refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

from core.matcher import Match
from edge.liveness import LivenessChecker, LivenessConfig, LivenessResult, LivenessState
from edge.policy import REASON_MATCHED, DecisionPolicy, Observation, PolicyConfig, Verdict
from edge.tracker import FaceFrame
from models.messages import Decision

log = logging.getLogger(__name__)

NEAR = 0.1
"""A match within ``threshold + NEAR`` is "near": the next frames may well vote, so they are all encoded."""

FULL_RATE_S = 3.0
"""Near or not, a face without a grant is encoded on every frame for at most this long per visit."""

SLOW_EVERY = 3
"""Otherwise (a stranger, far from every worker, or waiting long) every this many frames."""

_NO_VISIT = LivenessResult(LivenessState.PENDING, "no visit", 0, 0.0, 0, 0.0)


@dataclass(frozen=True, slots=True)
class Admission:
    """What the door does with a grant made by another way in (a QR credential); see grant_elsewhere."""

    open_door: bool
    record: bool
    reason: str


class DoorGate:
    """Policy verdicts and liveness results in, door verdicts out; see the module docstring."""

    def __init__(self, policy: PolicyConfig, liveness: LivenessConfig, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.policy = DecisionPolicy(policy, clock)
        self.liveness = LivenessChecker(liveness, clock)
        self.abandoned = 0
        self.spoofs = 0
        self.merged = 0  # grants not given because the other way in already let the worker in this visit
        self.evidence: LivenessResult | None = None
        """The liveness result the latest verdict rests on (None before a face of its visit was seen)."""
        self._spoofed: set[str] = set()  # workers whose last recorded event here is a spoof or a refusal
        self._elsewhere: dict[str, float] = {}  # worker -> when another way in let them in
        self._new_visit()

    def _new_visit(self) -> None:
        self._held: Verdict | None = None
        self._held_since = 0.0  # when the held grant started waiting for liveness
        self._prompted = False  # the "please move" prompt was due once in this visit
        self._granted = False  # the policy granted in this visit (held, released or spoofed)
        self._settled = False  # the door's decision for this visit is final: nothing more to compute
        self._visit_started: float | None = None
        self._frame_no = 0
        self._recent: Match | None = None  # the visit's latest encoded match
        self._live: LivenessResult | None = None
        self._let_in: str | None = None  # the worker whose face opened the door in this visit

    # -- what the pipeline should compute for the next frame --------------------------------
    @property
    def wants_encoding(self) -> bool:
        if self._granted or self._settled:
            return False
        young = self._visit_started is None or self._clock() - self._visit_started < FULL_RATE_S
        if young and (self._recent is None or not self._far(self._recent)):
            return True
        return (self._frame_no + 1) % SLOW_EVERY == 0

    def _far(self, match: Match) -> bool:
        """Whether a match is too far from every worker to vote, and not near enough to soon."""
        return match.identity is None or match.distance > self.policy.config.threshold + NEAR

    @property
    def wants_landmarks(self) -> bool:
        if self.liveness.config.mode == "off" or self._settled:
            return False
        return self._live is None or not (self._live.passed or self._live.failed)

    @property
    def eye_upscale_px(self) -> int:
        """Faces smaller than this should have their eyes measured on an upscaled crop (0: none) for blinks."""
        if not self.wants_landmarks or self.liveness.config.mode == "motion":
            return 0
        return self.liveness.config.eye_upscale_px

    @property
    def held(self) -> Verdict | None:
        """The policy's grant waiting for liveness, if any."""
        return self._held

    @property
    def held_since(self) -> float | None:
        """Clock time the held grant started waiting for liveness (None when nothing is held)."""
        return self._held_since if self._held is not None else None

    def prompt_due(self) -> Verdict | None:
        """The held grant, once per visit, when it has waited ``prompt_after_s`` for liveness: ask them to move.

        Only a grant the policy made is ever held, so a face it has not matched
        (a stranger, a photo of one) is never prompted; nor is a visit whose
        decision is made (the grant released or spoofed) or that has ended.
        """
        after = self.liveness.config.prompt_after_s
        if self._held is None or self._prompted or after <= 0 or self._clock() - self._held_since < after:
            return None
        self._prompted = True
        return self._held

    @property
    def liveness_result(self) -> LivenessResult | None:
        """The latest liveness result of the current visit (None before its first face)."""
        return self._live

    # -- one frame ---------------------------------------------------------------------------
    def observe(self, face: FaceFrame | None) -> Verdict | None:
        """Take what the pipeline saw on this frame; return the verdict the door must act on, if any."""
        self._expire_visit()
        self._frame_no += 1

        verdict = self.policy.observe(self._for_policy(face))
        if self._visit_started is None and self.policy.in_visit:
            self._visit_started = self._clock()
        if face is not None and face.observation is not None:
            self._recent = face.observation.match
        live = self._check_liveness(face)

        if verdict is not None and verdict.decision == Decision.DENIED:
            self.evidence = self._live
            return verdict
        if verdict is not None and verdict.open_door:
            self._granted = True
            if self._let_in_elsewhere(verdict):
                return None
            self._held, self._held_since = verdict, self._clock()
        if self._held is None:
            return None
        if live.passed:
            return self._release(live)
        if live.failed:
            return self._spoof(live)
        log.debug("grant for %s held: liveness %s", self._held.identity, live.reason)
        return None

    def grant_elsewhere(self, identity: str) -> Admission:
        """Another way in (a valid QR credential) would let ``identity`` in now: may it, and is it an entry?

        Not when this worker's face already opened the door in the current visit
        (one visit, one entry, one click). Otherwise the door opens, and the
        grant is recorded unless within the cooldown of the worker's last
        recorded entry by either way in. From now on the face path does not
        grant this worker in the current visit, or in one starting within
        ``visit_gap_s``; a face grant held for them waiting for liveness is dropped.
        """
        self._expire_visit()
        now = self._clock()
        gap = self.policy.config.visit_gap_s
        self._elsewhere = {w: at for w, at in self._elsewhere.items() if self._covers(at, now, gap)}
        if self.policy.in_visit and self._let_in == identity:
            self.merged += 1
            return Admission(False, False, "already let in by face in this visit")
        self._elsewhere[identity] = now
        if self._held is not None and self._held.identity == identity:
            log.info("grant for %s held for liveness: dropped, a credential let them in", identity)
            self._held, self._settled = None, True
            self.merged += 1
        # As for a face grant: a cooldown that started at a spoof of this worker does not hide their real entry.
        if self.policy.note_grant(identity, new_entry=identity in self._spoofed):
            self._spoofed.discard(identity)
            return Admission(True, True, "new entry")
        return Admission(True, False, "within cooldown: not a new entry")

    def refused(self, identity: str) -> None:
        """The door refused a grant of this gate for ``identity`` (outside the opening hours): nobody was let in.

        The policy took the grant as the worker's last recorded entry; as after a
        spoof, their next grant is recorded even within the cooldown, so that an
        entry just after opening time is not lost. The visit stays decided: one
        refusal per visit, not one every ``frames_required`` frames.
        """
        self._spoofed.add(identity)
        if self._let_in == identity:
            self._let_in = None

    def liveness_scores(self) -> dict[str, object]:
        """The liveness evidence of the latest verdict as the entry's ``Scores`` fields (entry/2)."""
        if self.liveness.config.mode == "off":
            return {"liveness": "off"}
        live = self.evidence
        if live is None:
            return {}
        return {
            "liveness": live.state.value,
            "blinks": min(live.blinks, 1000),
            "head_motion": min(max(live.motion, 0.0), 10.0),
            "liveness_ms": min(max(live.elapsed_s * 1000.0, 0.0), 3_600_000.0),
        }

    # -- helpers -------------------------------------------------------------------------------
    def _expire_visit(self) -> None:
        was_in_visit = self.policy.in_visit
        self.policy.observe(None)  # lets the policy close a visit whose gap has passed
        if was_in_visit and not self.policy.in_visit:
            self._end_visit()

    def _covers(self, at: float, now: float, gap: float) -> bool:
        """Whether another way in's grant at ``at`` still belongs to the current visit or one about to start."""
        started = self._visit_started
        return now <= at + gap or (self.policy.in_visit and started is not None and started <= at + gap)

    def _let_in_elsewhere(self, verdict: Verdict) -> bool:
        """The policy granted a worker whom another way in already let in during this visit: no second grant."""
        at = self._elsewhere.get(verdict.identity or "")
        if at is None or verdict.visit_started_at > at + self.policy.config.visit_gap_s:
            return False
        self._settled = True
        self.merged += 1
        log.info("face grant for %s not given: a credential let them in during this visit", verdict.identity)
        return True

    def _for_policy(self, face: FaceFrame | None) -> Observation | None:
        if face is None:
            return None
        if face.observation is not None:
            return face.observation
        recent = self._recent
        if recent is None or not self.policy.in_visit:
            return None
        if self._granted or self._far(recent):
            # The same face, not encoded on this frame: it still counts as seen (the visit goes on,
            # and a stranger is denied after deny_after_frames frames as before), judged by its
            # latest encoding. That copy can never vote: the visit is granted (no more votes), or
            # the match is beyond the threshold.
            return Observation(face_px=face.face_px, match=recent)
        return None

    def _check_liveness(self, face: FaceFrame | None) -> LivenessResult:
        if self._live is not None and (self._live.passed or self._live.failed):
            return self._live  # final until the visit ends
        if not self.policy.in_visit:
            # Outside a visit nothing is evidence: a face too small for the policy must not
            # start the liveness time limit before the person is at the door.
            return self._live or _NO_VISIT
        if face is not None and face.landmarks is not None:
            self._live = self.liveness.observe(
                face.landmarks, face.box, frame_size=face.frame_size, eye_landmarks=face.eye_landmarks
            )
        else:
            self._live = self.liveness.observe(None, None)
        return self._live

    def _release(self, live: LivenessResult) -> Verdict:
        held = self._held
        assert held is not None
        self._held, self._settled = None, True
        record = held.record
        reason = held.reason
        if not record and held.identity in self._spoofed:
            # The policy's cooldown started at the spoofed grant; this is the worker's real entry.
            record, reason = True, REASON_MATCHED
        if record and held.identity is not None:
            self._spoofed.discard(held.identity)
        if self.liveness.config.mode != "off":
            reason = f"{reason}; live: {live.reason}"
        self._let_in = held.identity
        self.evidence = live
        return replace(held, decided_at=self._clock(), record=record, reason=reason[:200])

    def _spoof(self, live: LivenessResult) -> Verdict:
        held = self._held
        assert held is not None
        self._held, self._settled = None, True
        self.spoofs += 1
        self.evidence = live
        if held.identity is not None:
            self._spoofed.add(held.identity)
        return replace(
            held,
            decision=Decision.SPOOF,
            reason=f"liveness failed: {live.reason}"[:200],
            decided_at=self._clock(),
            record=True,
            open_door=False,
        )

    def _end_visit(self) -> None:
        if self._held is not None:
            self.abandoned += 1
            log.info("visit of %s ended before liveness passed: grant dropped", self._held.identity)
        self.liveness.reset()
        self._new_visit()
