"""Versioned payload schemas.

Every payload is a UTF-8 JSON object with a ``schema`` field naming its type
and version (``"entry/1"``). Receivers call :func:`decode` with the expected
class: it checks the size first, then the JSON, then the schema, and raises a
:class:`~models.errors.ContractError` subclass with a readable message. Unknown
fields are rejected (``extra="forbid"``) so that a typo never silently drops
data; a new optional field therefore needs a new schema version.

Version 2 of ``status``, ``gallery_change``, ``sync_reply`` and ``entry``
adds optional fields (heartbeat details, validity windows and station access
lists, the server's clock, the liveness evidence in an entry's scores). A message is written as version 2 only when it uses one of
them, and then leaves out every such field it does not use, so a version-1
receiver keeps understanding everything that does not need version 2.
Receivers accept both versions; a version-1 message carrying a version-2
field is refused.
"""

from __future__ import annotations

import enum
import json
import uuid
from datetime import datetime, timezone
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.encoding import FaceEncoding
from models.errors import MalformedPayload, PayloadTooLarge
from models.topics import STATION_ID_PATTERN

MAX_PAYLOAD_BYTES = 256 * 1024
"""No contract message is larger; a sync reply is paged to stay under it."""

MAX_ENCODINGS_PER_WORKER = 16
MAX_CHANGES_PER_REPLY = 200
MAX_STATIONS_PER_WORKER = 1000

StationId = Annotated[str, Field(pattern=STATION_ID_PATTERN, description="station id, as in the topic")]
WorkerId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Version = Annotated[int, Field(ge=0, le=2**62)]
ShortText = Annotated[str, Field(max_length=200)]
DeviceState = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="e.g. ok, no_frames, locked")]


def _v2(**kwargs):  # noqa: ANN003, ANN202
    """An optional field added in version 2: left out of the wire form while unset."""
    return Field(default=None, exclude_if=lambda value: value is None, **kwargs)


def _schema_by_use(data: object, name: str, fields: tuple[str, ...]) -> object:
    """Before validation: with no ``schema`` given, version 2 if a version-2 field is used, else 1."""
    if isinstance(data, dict) and "schema" not in data and "schema_" not in data:
        used = any(data.get(f) is not None for f in fields) or any(
            _uses_v2(c) for c in (data.get("changes") or ((data["change"],) if "change" in data else ()))
        )
        return {**data, "schema": f"{name}/{2 if used else 1}"}
    return data


def _uses_v2(change: object) -> bool:
    fields = GalleryChange.V2_FIELDS
    if isinstance(change, GalleryChange):
        return any(getattr(change, f) is not None for f in fields)
    return isinstance(change, dict) and any(change.get(f) is not None for f in fields)


def _refuse_v2_fields_in_v1(message: BaseModel, fields: tuple[str, ...]) -> None:
    schema = str(getattr(message, "schema_", ""))
    if not schema.endswith("/1"):
        return
    for f in fields:
        if getattr(message, f, None) is not None:
            raise ValueError(f"{schema} has no field {f!r} (it came with version 2)")
    for change in getattr(message, "changes", ()) or (getattr(message, "change", None),):
        if change is not None and _uses_v2(change):
            raise ValueError(f"{schema} cannot carry validity windows or station lists (version 2)")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Decision(str, enum.Enum):
    """Outcome of an access attempt."""

    GRANTED = "granted"
    DENIED = "denied"
    SPOOF = "spoof"


class EventKind(str, enum.Enum):
    """What happened at the door."""

    FACE = "face"
    QR = "qr"
    EXIT_REQUEST = "exit_request"
    FORCED_OPEN = "forced_open"
    HELD_OPEN = "held_open"
    TAMPER = "tamper"


LivenessOutcome = Literal["off", "pending", "passed", "failed"]


class Scores(_Message):
    """The numbers behind a face decision, kept for audits and tuning.

    The liveness fields came with ``entry/2``: an entry that uses one of them
    is written as ``entry/2``, one that does not stays ``entry/1``, byte for byte.
    """

    V2_FIELDS: ClassVar[tuple[str, ...]] = ("liveness", "blinks", "head_motion", "liveness_ms")

    distance: float | None = Field(default=None, ge=0, le=10, description="distance to the best identity")
    second_distance: float | None = Field(default=None, ge=0, le=10, description="distance to the runner-up identity")
    frames: int | None = Field(default=None, ge=0, le=10_000, description="frames that agreed")
    face_px: int | None = Field(default=None, ge=0, le=100_000, description="face height in pixels")
    liveness: LivenessOutcome | None = _v2(
        description="the liveness check when the door decided: off, pending, passed or failed (entry/2)"
    )
    blinks: int | None = _v2(ge=0, le=1000, description="blinks the liveness check counted (entry/2)")
    head_motion: float | None = _v2(
        ge=0, le=10,
        description="largest head movement seen: the nose against eyes and mouth, in eye-to-eye distances (entry/2)",
    )
    liveness_ms: float | None = _v2(
        ge=0, le=3_600_000, description="first usable face to the liveness result, in milliseconds (entry/2)"
    )

    def uses_v2(self) -> bool:
        return any(getattr(self, f) is not None for f in self.V2_FIELDS)


class EntryEvent(_Message):
    """One door event, sent by a station. ``event_id`` makes delivery idempotent.

    Version 2 adds the liveness fields of :class:`Scores`; see the module docstring.
    """

    schema_: Literal["entry/1", "entry/2"] = Field(default="entry/1", alias="schema")
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    station_id: StationId
    kind: EventKind = EventKind.FACE
    decision: Decision
    worker_id: WorkerId | None = Field(default=None, description="null when nobody was recognised")
    reason: ShortText = ""
    scores: Scores = Field(default_factory=Scores)
    occurred_at: AwareDatetime = Field(default_factory=utcnow, description="station clock, with offset")
    decision_ms: float | None = Field(default=None, ge=0, le=3_600_000, description="first frame to decision")
    gallery_version: Version = 0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _schema(cls, data: object) -> object:
        if isinstance(data, dict) and "schema" not in data and "schema_" not in data:
            scores = data.get("scores")
            if isinstance(scores, Scores):
                used = scores.uses_v2()
            else:
                used = isinstance(scores, dict) and any(scores.get(f) is not None for f in Scores.V2_FIELDS)
            return {**data, "schema": f"entry/{2 if used else 1}"}
        return data

    @model_validator(mode="after")
    def _fields_of_version(self) -> "EntryEvent":
        if self.schema_ == "entry/1" and self.scores.uses_v2():
            raise ValueError("entry/1 scores have no liveness fields (they came with entry/2)")
        return self


class StationStatus(_Message):
    """Retained on the status topic; the broker publishes the offline form as last will.

    A running station republishes it as its heartbeat; version 2 adds the
    heartbeat's details.
    """

    V2_FIELDS: ClassVar[tuple[str, ...]] = (
        "camera", "door", "clock_offset_s", "uptime_s", "outbox_bytes", "outbox_limit_bytes", "outbox_alarm",
        "outbox_refused",
    )

    schema_: Literal["status/1", "status/2"] = Field(default="status/1", alias="schema")
    station_id: StationId
    online: bool
    agent_version: ShortText = ""
    gallery_version: Version = 0
    outbox_depth: int = Field(default=0, ge=0)
    at: AwareDatetime = Field(default_factory=utcnow)
    camera: DeviceState | None = _v2(description="camera state, e.g. ok, no_frames, unknown")
    door: DeviceState | None = _v2(description="door state, e.g. locked, unlocked, unknown")
    clock_offset_s: float | None = _v2(ge=-1e9, le=1e9, description="station clock minus server clock, estimated")
    uptime_s: float | None = _v2(ge=0, le=1e10, description="seconds since the agent started")
    outbox_bytes: int | None = _v2(ge=0, le=2**62, description="disk the queued entries take")
    outbox_limit_bytes: int | None = _v2(ge=0, le=2**62, description="the outbox's disk budget")
    outbox_alarm: bool | None = _v2(description="true while the outbox is near or at its budget")
    outbox_refused: int | None = _v2(ge=0, le=2**62, description="entries not queued since start: outbox full")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _schema(cls, data: object) -> object:
        return _schema_by_use(data, "status", cls.V2_FIELDS)

    @model_validator(mode="after")
    def _fields_of_version(self) -> "StationStatus":
        _refuse_v2_fields_in_v1(self, self.V2_FIELDS)
        return self


class GalleryOp(str, enum.Enum):
    UPSERT = "upsert"
    DELETE = "delete"


class GalleryChange(_Message):
    """One versioned change to the set of people a station may let in.

    ``upsert`` carries the worker's complete current encodings (not a delta),
    so applying a change twice, or out of order behind a newer one, is safe:
    a station applies a change only if its version is newer than what it holds
    for that worker. ``delete`` removes the worker's face data from the station.
    """

    version: Version = Field(description="server-wide, strictly increasing")
    op: GalleryOp
    worker_id: WorkerId
    display_name: ShortText = ""
    encodings: tuple[FaceEncoding, ...] = Field(default=(), max_length=MAX_ENCODINGS_PER_WORKER)
    active: bool = Field(default=True, description="false while suspended: kept, but never granted")
    valid_from: AwareDatetime | None = _v2(description="never granted before this time (version 2)")
    valid_until: AwareDatetime | None = _v2(description="never granted from this time on (version 2)")
    stations: tuple[StationId, ...] | None = _v2(
        max_length=MAX_STATIONS_PER_WORKER,
        description="the only stations that may grant this worker; absent: every station (version 2)",
    )

    V2_FIELDS: ClassVar[tuple[str, ...]] = ("valid_from", "valid_until", "stations")

    @field_validator("encodings")
    @classmethod
    def _delete_has_no_faces(cls, value, info):  # type: ignore[no-untyped-def]
        if info.data.get("op") == GalleryOp.DELETE and value:
            raise ValueError("a delete change must not carry encodings")
        return value

    @model_validator(mode="after")
    def _window_and_list(self) -> "GalleryChange":
        if self.op == GalleryOp.DELETE and any(getattr(self, f) is not None for f in self.V2_FIELDS):
            raise ValueError("a delete change carries no validity window or station list")
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be later than valid_from")
        return self


class GalleryChangeMessage(_Message):
    """Live broadcast of one change on ``ws/v1/gallery/change``."""

    schema_: Literal["gallery_change/1", "gallery_change/2"] = Field(default="gallery_change/1", alias="schema")
    change: GalleryChange

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _schema(cls, data: object) -> object:
        return _schema_by_use(data, "gallery_change", ())

    @model_validator(mode="after")
    def _fields_of_version(self) -> "GalleryChangeMessage":
        _refuse_v2_fields_in_v1(self, ())
        return self


class SyncRequest(_Message):
    """A station asks for every change after the version it holds."""

    schema_: Literal["sync_request/1"] = Field(default="sync_request/1", alias="schema")
    station_id: StationId
    since_version: Version
    request_id: uuid.UUID = Field(default_factory=uuid.uuid4)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SyncReply(_Message):
    """One page of changes answering a SyncRequest.

    ``snapshot`` true means the changes replace the station's whole gallery
    (the station fell too far behind, or holds a version the server never
    issued); the station swaps its gallery atomically once the last page
    (``more`` false) has arrived.
    """

    schema_: Literal["sync_reply/1", "sync_reply/2"] = Field(default="sync_reply/1", alias="schema")
    request_id: uuid.UUID
    snapshot: bool = False
    page: int = Field(default=0, ge=0)
    changes: tuple[GalleryChange, ...] = Field(default=(), max_length=MAX_CHANGES_PER_REPLY)
    more: bool = False
    latest_version: Version
    server_time: AwareDatetime | None = _v2(description="the server's clock when it sent the page (version 2)")

    V2_FIELDS: ClassVar[tuple[str, ...]] = ("server_time",)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _schema(cls, data: object) -> object:
        return _schema_by_use(data, "sync_reply", cls.V2_FIELDS)

    @model_validator(mode="after")
    def _fields_of_version(self) -> "SyncReply":
        _refuse_v2_fields_in_v1(self, self.V2_FIELDS)
        return self


class SyncAck(_Message):
    """A station confirms the gallery version it now holds."""

    schema_: Literal["sync_ack/1"] = Field(default="sync_ack/1", alias="schema")
    station_id: StationId
    version: Version

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Serialise a message to its wire form (compact UTF-8 JSON)."""
    data = message.model_dump_json(by_alias=True).encode("utf-8")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"message is {len(data)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    return data


def decode(payload: bytes | bytearray | memoryview, cls: type[M]) -> M:
    """Parse and validate a payload, raising a ContractError with a clear message."""
    raw = bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload is {len(raw)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise MalformedPayload(f"payload is not UTF-8 JSON: {err}") from err
    if not isinstance(obj, dict):
        raise MalformedPayload("payload must be a JSON object")
    try:
        return cls.model_validate(obj)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        raise MalformedPayload(
            f"{cls.__name__} invalid at {where}: {first.get('msg')} ({err.error_count()} error(s))"
        ) from err
