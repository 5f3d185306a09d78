"""``snapshot/1``: a small JPEG of the face in a *denied* attempt, sent after its entry.

Biometric data: a station sends one only where its operator switched
snapshots on (edge ``snapshots.enabled``, off by default), only for a refused
face (``denied`` or ``spoof``), never for a granted entry and never a whole
frame: the face box with a margin, downscaled (edge/snapshots.py). The server
keeps it next to the entry with the same ``event_id`` and the retention job
deletes it after ``retention_snapshots_days``.

Decoding is strict, before anything is stored: the payload is at most
:data:`MAX_SNAPSHOT_PAYLOAD_BYTES` (:class:`~models.errors.PayloadTooLarge`
otherwise), ``data`` must be canonical base64 of at most
:data:`MAX_SNAPSHOT_BYTES` bytes that start and end like a JPEG
(:class:`~models.errors.MalformedPayload`), and the topic must be this
station's snapshot topic (:class:`~models.errors.TopicMismatch`). Whether the
bytes really decode as an image of at most :data:`MAX_SNAPSHOT_PX` pixels is
the receiver's check (the contract imports no imaging library).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from models import topics
from models.errors import MalformedPayload, PayloadTooLarge, TopicMismatch
from models.messages import StationId, decode

__all__ = [
    "CONTENT_TYPE",
    "MAX_SNAPSHOT_BYTES",
    "MAX_SNAPSHOT_PAYLOAD_BYTES",
    "MAX_SNAPSHOT_PX",
    "SNAPSHOT_QOS",
    "EntrySnapshot",
    "decode_snapshot",
    "encode_snapshot",
]

MAX_SNAPSHOT_BYTES = 64 * 1024
"""The largest JPEG a snapshot may carry (a station's ``snapshots.max_bytes`` is at most this)."""
MAX_SNAPSHOT_PX = 480
"""The longest side of a snapshot image, in pixels: a face crop, never a camera frame."""
MAX_SNAPSHOT_PAYLOAD_BYTES = 4 * -(-MAX_SNAPSHOT_BYTES // 3) + 1024
"""The whole message: the base64 of the largest JPEG plus room for the other fields."""
SNAPSHOT_QOS = 1
CONTENT_TYPE = "image/jpeg"

_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"


class EntrySnapshot(BaseModel):
    """The face of a refused attempt, belonging to the entry event ``event_id`` of the same station."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["snapshot/1"] = Field(default="snapshot/1", alias="schema")
    event_id: uuid.UUID = Field(description="the entry event this snapshot belongs to (sent before it)")
    station_id: StationId
    taken_at: AwareDatetime = Field(
        default_factory=lambda: datetime.now(timezone.utc), description="station clock, with offset"
    )
    content_type: Literal["image/jpeg"] = CONTENT_TYPE
    data: str = Field(
        min_length=4,
        max_length=4 * -(-MAX_SNAPSHOT_BYTES // 3),
        description=f"the JPEG, standard base64 with padding, at most {MAX_SNAPSHOT_BYTES} bytes decoded",
    )

    @field_validator("data")
    @classmethod
    def _jpeg_in_base64(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError) as err:
            raise ValueError(f"data is not standard base64: {err}") from err
        if len(raw) > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"the image is {len(raw)} bytes, the limit is {MAX_SNAPSHOT_BYTES}")
        if not (raw.startswith(_JPEG_START) and raw.rstrip(b"\x00").endswith(_JPEG_END)):
            raise ValueError("data is not a JPEG image (content_type is image/jpeg)")
        return value

    @property
    def jpeg(self) -> bytes:
        """The image bytes (validated on construction)."""
        return base64.b64decode(self.data)

    @classmethod
    def of_jpeg(
        cls, jpeg: bytes, *, event_id: uuid.UUID | str, station_id: str, taken_at: datetime | None = None
    ) -> "EntrySnapshot":
        """Wrap JPEG bytes; raises PayloadTooLarge past MAX_SNAPSHOT_BYTES, MalformedPayload for anything else wrong."""
        if len(jpeg) > MAX_SNAPSHOT_BYTES:
            raise PayloadTooLarge(f"the image is {len(jpeg)} bytes, the limit is {MAX_SNAPSHOT_BYTES}")
        fields: dict[str, object] = {
            "event_id": event_id, "station_id": station_id, "data": base64.b64encode(jpeg).decode("ascii")
        }
        if taken_at is not None:
            fields["taken_at"] = taken_at
        try:
            return cls.model_validate(fields)
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise MalformedPayload(f"EntrySnapshot invalid: {err}") from err


def encode_snapshot(snapshot: EntrySnapshot) -> bytes:
    """The wire form (compact UTF-8 JSON), never larger than MAX_SNAPSHOT_PAYLOAD_BYTES."""
    data = snapshot.model_dump_json(by_alias=True).encode("utf-8")
    if len(data) > MAX_SNAPSHOT_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"snapshot is {len(data)} bytes, the limit is {MAX_SNAPSHOT_PAYLOAD_BYTES}")
    return data


def decode_snapshot(payload: bytes | bytearray | memoryview, *, topic: str | None = None) -> EntrySnapshot:
    """Parse and validate a snapshot; with ``topic``, it must be the snapshot topic of the payload's station.

    Raises PayloadTooLarge, MalformedPayload or TopicMismatch (all ContractError).
    """
    raw = bytes(payload)
    if len(raw) > MAX_SNAPSHOT_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"snapshot payload is {len(raw)} bytes, the limit is {MAX_SNAPSHOT_PAYLOAD_BYTES}")
    if topic is not None:
        try:
            station = topics.station_of(topic)
        except ValueError as err:
            raise TopicMismatch(str(err)) from err
        if topic != topics.snapshot(station):
            raise TopicMismatch(f"topic {topic!r} is not a snapshot topic")
    snapshot = decode(raw, EntrySnapshot)
    if topic is not None and snapshot.station_id != station:
        raise TopicMismatch(f"payload names station {snapshot.station_id!r}, the topic {station!r}")
    return snapshot
