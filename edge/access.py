"""QR access as the agent wires it: its QrAccess (edge/qr.py) and qr_then_face's 1:1 face check of a claim.

In mode ``qr_then_face`` a valid credential only names a worker (a
:class:`~edge.qr.Claim`); the face path then compares the camera's face with
that worker's encodings alone. :class:`ClaimCheck` runs that comparison
through a :class:`~edge.gate.DoorGate` of each claim's own, so that a visit or
a cooldown from before the claim does not count.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from edge.camera import Frame
from edge.config import AccessConfig
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.liveness import LivenessConfig
from edge.pipeline import FramePipeline
from edge.policy import PolicyConfig, Verdict
from edge.qr import Claim, CredentialVerifier, FrameStep, QrAccess
from edge.station_config import StationConfigApplier
from edge.store import EdgeStore
from models.messages import Decision


def build_access(
    a: AccessConfig, store: EdgeStore, holder: GalleryHolder, configs: StationConfigApplier | None
) -> QrAccess:
    """The station's QrAccess, in the mode ``configs`` holds; it checks credentials where the server's keys are set."""
    verifier = None
    if a.qr_public_keys:  # also in mode face: the server's config may switch to a QR mode
        verifier = CredentialVerifier(
            a.qr_public_keys,
            worker=store.worker,
            grantable=lambda worker_id: worker_id in holder.gallery.identities,
            clock_skew_s=a.clock_skew_s,
        )
    access = QrAccess(a, verifier)
    if configs is not None:
        access.mode = configs.mode
    return access


class ClaimCheck:
    """qr_then_face: the face path against the claimed worker only, through a gate of the claim's own.

    ``clock`` is the gates' clock (the agent's: the time of the frame being judged).
    """

    def __init__(self, policy: PolicyConfig, liveness: LivenessConfig, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._liveness = liveness
        self._clock = clock
        self._claim: tuple[Claim, DoorGate] | None = None  # the claim being checked and its own fresh gate
        self.gate: DoorGate | None = None
        """The gate of the claim decided last (its liveness evidence goes into the entry)."""

    def forget(self) -> None:
        """Drop the claim being checked (it belongs to an access mode no longer in force)."""
        self._claim = None

    def verify(self, pipeline: FramePipeline, access: QrAccess, step: FrameStep, frame: Frame) -> Verdict | None:
        """One frame of the check of ``step.claim``; a verdict naming the claimed worker once the gate decides."""
        assert step.claim is not None
        if self._claim is None or self._claim[0] != step.claim:
            # A fresh policy and liveness check per claim: a visit or cooldown from before must not count.
            gate = DoorGate(self._policy, self._liveness, clock=self._clock)
            self._claim = (step.claim, gate)
        gate = self.gate = self._claim[1]
        # As edge.pipeline.run_frame, with the one-worker gallery.
        face = pipeline.analyse(
            frame.rgb, t=frame.t, encode=gate.wants_encoding, landmarks=gate.wants_landmarks, gallery=step.face_gallery,
            eye_upscale_px=gate.eye_upscale_px,
        )
        verdict = gate.observe(face)
        if verdict is None:
            return None
        access.end_claim()
        self._claim = None
        cid = step.claim.credential_id
        outcome = {Decision.GRANTED: "face verified 1:1", Decision.DENIED: "face does not match (1:1)"}
        reason = f"credential {cid}: {outcome.get(verdict.decision, 'face check failed')}: {verdict.reason}"
        return replace(verdict, identity=step.claim.worker_id, reason=reason[:200])
