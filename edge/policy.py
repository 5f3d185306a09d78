"""The door-decision policy: pure code, an injected clock, no models, pins or broker.

It turns a stream of per-frame observations (the largest usable face and its
1:N match, or None) into at most a few verdicts per *visit*:

- A frame **votes** for an identity only if its distance is within
  ``threshold`` and the runner-up identity is at least ``margin`` farther;
  otherwise it abstains (an unknown face, or a tie between two workers).
- A **grant** needs ``frames_required`` votes for the same identity within
  ``window_s``, with no vote for a *different* identity in between. Abstaining
  frames (a blurred frame, a turned head) neither count nor break the run; a
  conflicting vote restarts it, so alternating identities never grant.
- A **visit** starts with the first usable face and ends after ``visit_gap_s``
  without one. It yields at most one grant and at most one denial; a denial
  (after ``deny_after_frames`` usable frames without a grant) may be followed
  by a grant in the same visit, never the reverse.
- **Cooldown**: a grant within ``cooldown_s`` of the same worker's last
  *recorded* grant still opens the door but is not recorded as a new entry.
  Grants by QR credential share it (:meth:`DecisionPolicy.note_grant`).
  Measuring from the last recorded grant (not from any grant) bounds what the
  audit log can miss: someone going in and out all day is logged at least
  every ``cooldown_s``.
- **Unknown rate limit**: at most one recorded denial per
  ``unknown_log_interval_s`` per station; the door stays shut regardless.

Times are whatever the injected ``clock`` returns (seconds); the agent feeds
the timestamps of the frames, so "first frame to relay" is measured from when
the camera delivered the frame, not from when the detector got to it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from core.matcher import DEFAULT_THRESHOLD, Match
from models.messages import Decision

REASON_MATCHED = "matched"
REASON_UNKNOWN = "unknown face"
REASON_AMBIGUOUS = "ambiguous: two workers too close"
REASON_INCONSISTENT = "inconsistent: frames named different workers"
REASON_TOO_SLOW = "too few agreeing frames within the time window"


class PolicyConfig(BaseModel):
    """Every knob of the decision policy, bounded and documented."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(
        default=DEFAULT_THRESHOLD, ge=0.2, le=0.8,
        description="Largest distance from a worker's enrollment template accepted as a match. Chosen with "
        "`./run evaluate` for template enrollment (core/templates.py; docs/accuracy.md): re-derive it if enrollment "
        "changes. face_recognition's 0.6 without a margin lets 9 of 40 strangers in.",
    )
    margin: float = Field(
        default=0.105, ge=0.0, le=0.5,
        description="The runner-up worker must be at least this much farther than the best one; closer is a tie and "
        "refused. The knob that keeps strangers out (docs/accuracy.md: 0.0975 let 2 of 40 in on the dev protocol).",
    )
    frames_required: int = Field(
        default=3, ge=1, le=30,
        description="Agreeing frames needed to grant: one lucky frame lets strangers in that single frames refuse.",
    )
    window_s: float = Field(
        default=2.0, gt=0.0, le=30.0, description="The agreeing frames must all fall within this many seconds."
    )
    min_face_px: int = Field(
        default=80, ge=20, le=2000,
        description="Faces smaller than this (full-frame pixels, shorter box side) are ignored: not at the door yet. "
        "Recognition holds down to ~80 px and lets strangers in at ~50 px (docs/accuracy-study.md).",
    )
    visit_gap_s: float = Field(
        default=1.5, gt=0.0, le=60.0, description="This long without a usable face ends a visit."
    )
    deny_after_frames: int = Field(
        default=6, ge=1, le=1000,
        description="A visit with this many usable frames and no grant yields one 'denied' (door stays shut).",
    )
    cooldown_s: float = Field(
        default=30.0, ge=0.0, le=3600.0,
        description="A worker granted again within this time of their last recorded entry is let in but not logged again.",
    )
    unknown_log_interval_s: float = Field(
        default=10.0, ge=0.0, le=3600.0,
        description="At most one logged unknown-face denial per this many seconds per station.",
    )


@dataclass(frozen=True, slots=True)
class Observation:
    """The largest usable face of one frame: its height in pixels and its 1:N match."""

    face_px: int
    match: Match


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision the door acts on; ``record`` says whether it becomes an entry event."""

    decision: Decision
    identity: str | None
    reason: str
    distance: float | None
    second_distance: float | None
    frames: int
    face_px: int
    visit_started_at: float
    decided_at: float
    record: bool
    open_door: bool

    @property
    def elapsed_s(self) -> float:
        """Seconds from the visit's first usable frame to the decision."""
        return self.decided_at - self.visit_started_at


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class _Visit:
    started_at: float
    last_seen: float
    frames: int = 0
    granted: bool = False
    denied: bool = False
    # (time, voted identity, observation) of frames that voted for an identity;
    # abstentions are not kept, they neither count nor break a run.
    votes: deque[tuple[float, str, Observation]] = field(default_factory=deque)
    best: Observation | None = None
    n_unknown: int = 0
    n_tie: int = 0
    n_conflict: int = 0


class DecisionPolicy:
    """Feed it one observation per frame; it returns a Verdict when the door must act."""

    def __init__(self, config: PolicyConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._visit: _Visit | None = None
        self._last_recorded_grant: dict[str, float] = {}
        self._last_unknown_logged: float | None = None

    @property
    def in_visit(self) -> bool:
        return self._visit is not None

    def vote(self, match: Match) -> str | None:
        """The identity this frame votes for, or None (unknown face or a tie)."""
        if match.identity is None or match.distance > self.config.threshold:
            return None
        if match.margin < self.config.margin:
            return None
        return match.identity

    def observe(self, obs: Observation | None) -> Verdict | None:
        now = self._clock()
        cfg = self.config
        visit = self._visit
        if visit is not None and now - visit.last_seen > cfg.visit_gap_s:
            visit = self._visit = None
        if obs is None or obs.face_px < cfg.min_face_px:
            return None
        if visit is None:
            visit = self._visit = _Visit(started_at=now, last_seen=now)
        visit.last_seen = now
        visit.frames += 1
        if visit.best is None or obs.match.distance < visit.best.match.distance:
            visit.best = obs
        if visit.granted:
            return None  # one grant per visit, however long the person stands there

        voted = self.vote(obs.match)
        if voted is None:
            if obs.match.identity is not None and obs.match.distance <= cfg.threshold:
                visit.n_tie += 1
            else:
                visit.n_unknown += 1
        else:
            while visit.votes and now - visit.votes[0][0] > cfg.window_s:
                visit.votes.popleft()
            if visit.votes and visit.votes[-1][1] != voted:
                visit.n_conflict += 1
                visit.votes.clear()  # a different worker named: start the run again
            visit.votes.append((now, voted, obs))
            if len(visit.votes) >= cfg.frames_required:
                return self._grant(visit, voted, now)

        if not visit.denied and visit.frames >= cfg.deny_after_frames:
            return self._deny(visit, now)
        return None

    def note_grant(self, identity: str, *, new_entry: bool = False) -> bool:
        """A grant made outside the policy (a QR credential) now: True when it is a new entry.

        It shares the cooldown with the policy's own grants: within ``cooldown_s`` of the
        worker's last recorded grant it is not a new entry (unless ``new_entry`` says it is);
        otherwise it becomes that last recorded grant, so a face grant following within the
        cooldown is not one either.
        """
        return self._take_entry(identity, self._clock(), force=new_entry)

    def _take_entry(self, identity: str, now: float, force: bool = False) -> bool:
        last = self._last_recorded_grant.get(identity)
        record = force or last is None or now - last >= self.config.cooldown_s
        if record:
            self._last_recorded_grant[identity] = now
        return record

    def _grant(self, visit: _Visit, identity: str, now: float) -> Verdict:
        visit.granted = True
        agreeing = [o for _t, _i, o in visit.votes]
        closest = min(agreeing, key=lambda o: o.match.distance)
        record = self._take_entry(identity, now)
        return Verdict(
            decision=Decision.GRANTED,
            identity=identity,
            reason=REASON_MATCHED if record else "matched (within cooldown: not a new entry)",
            distance=_finite(closest.match.distance),
            second_distance=_finite(closest.match.second_distance),
            frames=len(agreeing),
            face_px=agreeing[-1].face_px,
            visit_started_at=visit.started_at,
            decided_at=now,
            record=record,
            open_door=True,
        )

    def _deny(self, visit: _Visit, now: float) -> Verdict:
        visit.denied = True
        last = self._last_unknown_logged
        record = last is None or now - last >= self.config.unknown_log_interval_s
        if record:
            self._last_unknown_logged = now
        # The most frequent reason the visit's frames did not agree on a worker.
        counts = {REASON_UNKNOWN: visit.n_unknown, REASON_AMBIGUOUS: visit.n_tie, REASON_INCONSISTENT: visit.n_conflict}
        reason = max(counts, key=counts.__getitem__)
        if counts[reason] == 0:
            reason = REASON_TOO_SLOW
        best = visit.best
        assert best is not None
        return Verdict(
            decision=Decision.DENIED,
            identity=None,
            reason=reason,
            distance=_finite(best.match.distance),
            second_distance=_finite(best.match.second_distance),
            frames=visit.frames,
            face_px=best.face_px,
            visit_started_at=visit.started_at,
            decided_at=now,
            record=record,
            open_door=False,
        )
