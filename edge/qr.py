"""A way in without a face: signed QR credentials read by the station's camera, and the station modes.

:class:`CredentialVerifier` decides whether a QR code's text is a credential
this station honours. In order, a credential is refused when it is

1. damaged (not a well-formed ``WS1.`` text; other QR codes are ignored),
2. forged (its Ed25519 signature does not verify with a configured public key),
3. expired, or issued further ahead of the station clock than ``clock_skew_s``
   (a station without NTP must not judge expiry),
4. for a worker the station does not know, has deleted, holds suspended, or
   may not let in here now (station access list, validity window),
5. revoked: the station holds a newer gallery version for the worker than the
   one the credential is bound to. The server revokes by appending a gallery
   change for the worker, so revocation arrives with the ordinary gallery sync
   (and its acks); it also voids that worker's other credentials, which the
   server reports. See docs/protocol.md, "QR credentials".
6. for a worker not in the matcher's gallery (whoever face recognition could
   not let in here, a QR code does not let in either).

:class:`QrAccess` applies ``access.mode`` to each frame:

- ``face``: no QR scanning at all; the face path runs as before.
- ``qr``: QR only, the face path never runs.
- ``face_or_qr``: a frame with a credential is decided by it; other frames go
  to the face path. Where the two meet, the agent asks the gate
  (edge.gate.DoorGate.grant_elsewhere): a visit lets a worker in once,
  by whichever way came first, and both ways share the cooldown of what is
  recorded.
- ``qr_then_face``: the face path runs only while a valid credential has
  *claimed* a worker, and then only against that worker's encodings (1:1,
  with the policy's threshold). The claim ends with the face verdict or after
  ``qr_face_s`` (then: denied).

A code held in front of the camera is one presentation: it is decided once,
and again only after it was out of sight for ``qr_repeat_s``. Refusals of
codes whose signature does not verify are recorded at most once per
``unsigned_log_interval_s`` (the door refuses each one).
"""

from __future__ import annotations

import base64
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.imaging import detect_qr, fit_within
from core.matcher import Gallery, Match
from edge.config import AccessConfig
from models import credential as cred
from models.messages import Decision

log = logging.getLogger(__name__)

WorkerLookup = Callable[[str], "Mapping[str, Any] | None"]
"""worker_id -> the station's cache row or None (edge.store.EdgeStore.worker): keys ``active``, ``deleted``,
``version`` and, when the store has them, ``allowed`` and ``valid_from``/``valid_until`` (Unix seconds)."""


@dataclass(frozen=True, slots=True)
class CredentialCheck:
    """The verdict on one credential; ``claims`` is set only when the signature verified."""

    ok: bool
    reason: str
    claims: cred.CredentialClaims | None = None

    @property
    def credential_id(self) -> str | None:
        return self.claims.credential_id if self.claims else None


class CredentialVerifier:
    def __init__(
        self,
        public_keys: Sequence[str],
        *,
        worker: WorkerLookup,
        grantable: Callable[[str], bool] = lambda _w: True,
        wall_clock: Callable[[], float] = time.time,
        clock_skew_s: float = 300.0,
    ) -> None:
        if not public_keys:
            raise ValueError("no QR public key configured (access.qr_public_keys)")
        self._keys = [Ed25519PublicKey.from_public_bytes(base64.b64decode(k)) for k in public_keys]
        self._worker = worker
        self._grantable = grantable
        self._wall = wall_clock
        self.clock_skew_s = clock_skew_s

    def check(self, text: str) -> CredentialCheck:
        try:
            payload, signature = cred.split(text)
        except cred.MalformedCredential as err:
            return CredentialCheck(False, f"damaged credential: {err}")
        if not any(_verifies(key, signature, payload) for key in self._keys):
            return CredentialCheck(False, "forged credential: the signature does not verify")
        try:
            claims = cred.parse(payload)
        except cred.MalformedCredential as err:  # signed by our server, yet unreadable: a newer format
            return CredentialCheck(False, f"unreadable credential: {err}")
        now = self._wall()
        if now >= claims.expires:
            return CredentialCheck(False, f"credential expired on {_day(claims.expires)}", claims)
        if claims.issued > now + self.clock_skew_s:
            return CredentialCheck(
                False, f"credential issued {_day(claims.issued)}, after the station's clock: set the clock (NTP)",
                claims,
            )
        row = self._worker(claims.worker_id)
        if row is None:
            return CredentialCheck(False, "worker unknown at this station", claims)
        if row.get("deleted"):
            return CredentialCheck(False, "worker deleted", claims)
        if not row.get("active"):
            return CredentialCheck(False, "worker suspended", claims)
        held = int(row.get("version") or 0)
        if held > claims.bound_version:
            return CredentialCheck(
                False,
                f"credential revoked (worker changed at version {held}, credential bound to {claims.bound_version})",
                claims,
            )
        if row.get("allowed") is False:
            return CredentialCheck(False, "worker not on this station's access list", claims)
        starts, ends = row.get("valid_from"), row.get("valid_until")
        if (starts is not None and now < starts) or (ends is not None and now >= ends):
            return CredentialCheck(False, "outside the worker's validity window", claims)
        if not self._grantable(claims.worker_id):
            return CredentialCheck(False, "worker not admitted at this station (no face data for this model)", claims)
        return CredentialCheck(True, "valid credential", claims)


def _verifies(key: Ed25519PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def _day(unix: int) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class OneToOneGallery:
    """One worker's encodings taken from the station's gallery, for 1:1 verification.

    Offers what the frame pipeline uses of a Gallery (``len``, ``match``,
    ``identities``, ``version``). A match always names the claimed worker, with
    no runner-up, so the policy's margin test passes and its threshold decides.
    """

    def __init__(self, gallery: Gallery, worker_id: str) -> None:
        self.worker_id = worker_id
        self.version = gallery.version
        self._gallery = gallery
        self._index = gallery.identities.index(worker_id) if worker_id in gallery.identities else None
        self.identities: tuple[str, ...] = (worker_id,) if self._index is not None else ()

    def __len__(self) -> int:
        return 0 if self._index is None else 1

    def match(self, query: np.ndarray) -> Match:
        if self._index is None:
            return Match(None, math.inf, None, math.inf)
        distance = float(self._gallery.identity_distances(query)[self._index])
        return Match(self.worker_id, distance, None, math.inf)


@dataclass(frozen=True, slots=True)
class QrDecision:
    """A door decision made by a credential alone (mode qr / face_or_qr, or a refused credential)."""

    decision: Decision
    worker_id: str | None
    credential_id: str | None
    reason: str
    at: float
    record: bool = True
    """False for a forged or damaged code within ``unsigned_log_interval_s`` of the last one recorded."""

    @property
    def open_door(self) -> bool:
        return self.decision == Decision.GRANTED


@dataclass(frozen=True, slots=True)
class Claim:
    """qr_then_face: a valid credential named this worker; their face must follow by ``until``."""

    worker_id: str
    credential_id: str
    since: float
    until: float


@dataclass(frozen=True, slots=True)
class FrameStep:
    """What one frame needs: a QR decision to act on, and the gallery for the face path (None: skip it)."""

    qr: QrDecision | None = None
    face_gallery: Gallery | OneToOneGallery | None = None
    claim: Claim | None = None


class QrAccess:
    """Applies the station mode to each frame (see the module docstring). Not thread-safe: the frame loop's."""

    def __init__(
        self,
        settings: AccessConfig,
        verifier: CredentialVerifier | None,
        *,
        reader: Callable[[np.ndarray], list[str]] = detect_qr,
    ) -> None:
        if settings.mode != "face" and verifier is None:
            raise ValueError(f"access mode {settings.mode} needs a credential verifier")
        self.settings = settings
        self.mode = settings.mode
        self.verifier = verifier
        self._read_texts = reader
        self._seen: dict[str, float] = {}
        self._last_unsigned_logged: float | None = None
        self.claim: Claim | None = None
        self.scanned = 0
        self.ignored = 0

    def step(self, rgb: np.ndarray, now: float, gallery: Gallery) -> FrameStep:
        mode = self.mode
        if mode == "face":
            return FrameStep(face_gallery=gallery)
        if mode == "qr_then_face":
            return self._qr_then_face(rgb, now, gallery)
        found = self._read(rgb, now)
        if found is not None:
            return FrameStep(qr=self._decide(found, now))
        return FrameStep(face_gallery=gallery if mode == "face_or_qr" else None)

    def _qr_then_face(self, rgb: np.ndarray, now: float, gallery: Gallery) -> FrameStep:
        claim = self.claim
        if claim is not None and now > claim.until:
            self.claim = None
            reason = f"credential {claim.credential_id}: no matching face within {self.settings.qr_face_s:g} s"
            return FrameStep(qr=QrDecision(Decision.DENIED, claim.worker_id, claim.credential_id, reason, now))
        if claim is None:
            found = self._read(rgb, now)
            if found is None:
                return FrameStep()
            if not found.ok or found.claims is None:
                return FrameStep(qr=self._decide(found, now))
            claim = self.claim = Claim(found.claims.worker_id, found.claims.credential_id, now, now + self.settings.qr_face_s)
            log.info("credential %s names worker %s: verifying the face (1:1)", claim.credential_id, claim.worker_id)
        return FrameStep(face_gallery=OneToOneGallery(gallery, claim.worker_id), claim=claim)

    def end_claim(self) -> Claim | None:
        """The face path decided (granted, denied or spoof): the claim is used up. Returns it."""
        claim, self.claim = self.claim, None
        return claim

    def _read(self, rgb: np.ndarray, now: float) -> CredentialCheck | None:
        """The check of the first credential newly shown in this frame, or None."""
        assert self.verifier is not None
        small, _ = fit_within(rgb, self.settings.qr_max_side)
        texts = self._read_texts(small)
        self.scanned += 1
        repeat = self.settings.qr_repeat_s
        self._seen = {t: seen for t, seen in self._seen.items() if now - seen <= repeat}
        fresh: list[str] = []
        for text in texts:
            if not cred.is_credential(text):
                self.ignored += 1
                continue
            if text not in self._seen:
                fresh.append(text)
            self._seen[text] = now  # still in sight: the same presentation goes on
        if not fresh:
            return None
        return self.verifier.check(fresh[0])

    def _decide(self, check: CredentialCheck, now: float) -> QrDecision:
        claims = check.claims
        worker = claims.worker_id if claims else None
        cid = check.credential_id
        reason = f"credential {cid}: {check.reason}" if cid else check.reason
        record = True
        if claims is None:  # a phone cycling through forged codes must not flood the entry log
            last = self._last_unsigned_logged
            record = last is None or now - last >= self.settings.unsigned_log_interval_s
            if record:
                self._last_unsigned_logged = now
        return QrDecision(Decision.GRANTED if check.ok else Decision.DENIED, worker, cid, reason[:200], now, record)
