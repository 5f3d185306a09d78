"""Snapshots of refused faces: a small JPEG of the face in a denied attempt, sent after its entry.

Off by default (``snapshots.enabled``): a face picture is biometric data, so an
operator turns it on per station where the law and the union's policy allow
it. When on, each *recorded* entry whose decision is in ``snapshots.decisions``
(a stranger ``denied``, a photo or screen refused as ``spoof``) gets one
snapshot: the face box of the latest frame that showed a face (at most
:data:`FACE_MAX_AGE_S` before the decision) with a margin, downscaled to
``max_px`` and JPEG-encoded under ``max_bytes`` (core.imaging.face_jpeg). A
granted entry never gets one, and the camera frame itself is never kept.

Bounds: at most ``per_hour`` snapshots in any sliding hour (someone loitering
in front of the door cannot fill the outbox with pictures), and at most
``outbox_share`` of the outbox budget held by snapshots. They travel through
the same durable outbox as entries, queued after their entry, so a station
offline for a day still delivers them; when an entry needs the room, queued
snapshots are dropped first (edge/outbox_store.py).

The rate window is kept in memory: a restart starts a fresh hour, which costs
at most ``per_hour`` extra pictures per restart.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.faces import Box
from edge.errors import StoreError
from models.errors import ContractError
from models.messages import EntryEvent
from models.snapshot import MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_PX, EntrySnapshot

if TYPE_CHECKING:
    from edge.store import EdgeStore

log = logging.getLogger(__name__)

FACE_MAX_AGE_S = 2.0
"""The face used must have been seen at most this long (frame time) before the decision."""
_HOUR_S = 3600.0


class SnapshotConfig(BaseModel):
    """Whether this station sends a picture of refused faces, and how small and how few."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=False,
        description="Send a small JPEG of the face with each recorded refused attempt. Off by default: a face "
        "picture is biometric data; switch it on only where the law and the union's policy allow it. The server "
        "deletes snapshots after retention_snapshots_days.",
    )
    decisions: tuple[Literal["denied", "spoof"], ...] = Field(
        default=("denied", "spoof"), min_length=1, max_length=2,
        description='Which refusals get a snapshot: "denied" (an unknown face) and/or "spoof" (liveness failed). '
        "A granted entry never gets one.",
    )
    max_px: int = Field(
        default=160, ge=48, le=MAX_SNAPSHOT_PX,
        description="Longest side of the face crop in pixels (the crop is downscaled to it; never a whole frame).",
    )
    margin: float = Field(
        default=0.35, ge=0.0, le=1.0,
        description="Added around the face box on every side, as a fraction of the box's size.",
    )
    jpeg_quality: int = Field(
        default=80, ge=30, le=95, description="JPEG quality (lowered when needed to fit max_bytes)."
    )
    max_bytes: int = Field(
        default=32 * 1024, ge=2048, le=MAX_SNAPSHOT_BYTES,
        description="Hard cap on one snapshot's JPEG in bytes; a face that does not fit even at quality 30 is "
        "not sent.",
    )
    per_hour: int = Field(
        default=30, ge=1, le=600,
        description="At most this many snapshots in any sliding hour (a loitering stranger cannot fill the outbox).",
    )
    outbox_share: float = Field(
        default=0.25, ge=0.01, le=0.9,
        description="Snapshots may take at most this fraction of the outbox budget (outbox.max_mb); entries always "
        "come first and push queued snapshots out when the outbox is full.",
    )


class SnapshotTaker:
    """Keeps the latest face seen and turns it into a queued snapshot after a refused entry.

    Runs on the frame loop's thread: ``see`` on every frame, ``after_entry``
    after an entry was queued. Encoding a 160-pixel JPEG takes about a millisecond.
    """

    def __init__(
        self,
        config: SnapshotConfig,
        station_id: str,
        store: "EdgeStore",
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.station_id = station_id
        self.store = store
        self.wake = wake
        self.clock = clock
        self.counts: Counter[str] = Counter()
        """queued, rate_limited, no_face, too_large, outbox_full, errors (for logs and tests)."""
        self._face: tuple[np.ndarray, Box, float] | None = None
        self._taken: deque[float] = deque()

    def see(self, rgb: np.ndarray, box: Box | None, t: float) -> None:
        """Remember this frame's face (a reference, not a copy: frames are never written to)."""
        if box is not None:
            self._face = (rgb, box, t)

    def after_entry(self, event: EntryEvent, *, at: float) -> bool:
        """Queue a snapshot for ``event`` if it is a refusal this station sends pictures of; True if queued.

        ``at``: the decision's frame time. Never raises: a snapshot is a nice-to-have next to the entry.
        """
        # Taken whatever the decision: a face seen before a grant is never used for a later picture,
        # and each refusal needs a face of its own.
        face, self._face = self._face, None
        if event.decision.value not in self.config.decisions:
            return False
        if face is None or at - face[2] > FACE_MAX_AGE_S:
            self.counts["no_face"] += 1
            return False
        now = self.clock()
        while self._taken and now - self._taken[0] >= _HOUR_S:
            self._taken.popleft()
        if len(self._taken) >= self.config.per_hour:
            self.counts["rate_limited"] += 1
            log.info("snapshot for %s not taken: %d in the last hour already", event.event_id, len(self._taken))
            return False
        # Here, not at the top: edge.config imports this module for SnapshotConfig, and OpenCV
        # should load only in the agent (where it is loaded anyway), not in every config check.
        from core.imaging import ImageError, face_jpeg

        rgb, box, _t = face
        c = self.config
        try:
            jpeg = face_jpeg(rgb, (box.top, box.right, box.bottom, box.left), margin=c.margin, max_side=c.max_px,
                             quality=c.jpeg_quality, max_bytes=c.max_bytes)
            snapshot = EntrySnapshot.of_jpeg(jpeg, event_id=event.event_id, station_id=self.station_id)
        except (ImageError, ContractError) as err:
            self.counts["too_large"] += 1
            log.warning("snapshot for %s not taken: %s", event.event_id, err)
            return False
        limit = self.store.outbox_limit_bytes
        try:
            self.store.enqueue_snapshot(snapshot, max_bytes=int(limit * c.outbox_share) if limit else None)
        except StoreError as err:  # OutboxFull: the entry is queued, the picture is not
            self.counts["outbox_full"] += 1
            log.warning("snapshot for %s not queued: %s", event.event_id, err)
            return False
        except Exception:  # the disk: logged, and the door loop goes on
            self.counts["errors"] += 1
            log.exception("snapshot for %s not queued", event.event_id)
            return False
        self._taken.append(now)
        self.counts["queued"] += 1
        self.wake()
        return True
