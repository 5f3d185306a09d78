"""Settings of the station's sync side: the outbox's disk budget and the heartbeat.

Kept apart from edge/config.py (which includes them as ``outbox:`` and
``status:``) so that edge/sync.py and edge/outbox.py can use them without
importing the whole agent configuration.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class OutboxConfig(BaseModel):
    """How much disk queued entry events may take while the server cannot be reached."""

    model_config = ConfigDict(extra="forbid")

    max_mb: float = Field(
        default=64.0,
        ge=1.0,
        le=100_000.0,
        description=(
            "Disk budget of the queued entry events in MiB (an event takes about 0.6 KiB: 64 MiB hold about "
            "100,000). When it is full, new events are not queued: each is logged in full at ERROR level and "
            "counted (heartbeat outbox_refused); the door keeps working."
        ),
    )
    warn_fraction: float = Field(
        default=0.8,
        ge=0.1,
        le=0.99,
        description="Raise the outbox alarm (log warning, heartbeat outbox_alarm) at this fraction of max_mb.",
    )

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * MIB)


class StatusConfig(BaseModel):
    """The station's heartbeat on its retained status topic."""

    model_config = ConfigDict(extra="forbid")

    heartbeat_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between heartbeats (agent and gallery version, outbox, camera, door, clock, uptime).",
    )
