"""Request and response bodies of the HTTP API, split by purpose (Create / Public / list pages)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from models.encoding import FACE_MODEL_ID, FaceEncoding
from models.messages import MAX_ENCODINGS_PER_WORKER
from models.topics import check_station_id

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=32, pattern=r"^\+?[0-9][0-9 ()-]*$"),
]
MAX_PHOTOS = 5


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    mqtt_connected: bool


class StationCreate(_In):
    station_id: str = Field(description="1-63 characters a-z, 0-9, '-' or '_'; it appears in the station's topics")
    name: Name

    @field_validator("station_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_station_id(value)


class StationPublic(_Out):
    station_id: str
    name: str
    created_at: datetime
    online: bool
    last_seen_at: datetime | None
    gallery_version_acked: int
    agent_version: str
    outbox_depth: int


class StationsPublic(BaseModel):
    items: list[StationPublic]


class WorkerCreate(_In):
    """The fields of an enrollment besides the face data (the photo form sends the same)."""

    name: Name
    phone: Phone | None = None


class WorkerEncodingsCreate(WorkerCreate):
    """Enrollment with encodings computed elsewhere (the enrollment CLI)."""

    encodings: list[FaceEncoding] = Field(min_length=1, max_length=MAX_ENCODINGS_PER_WORKER)

    @field_validator("encodings")
    @classmethod
    def _our_model(cls, value: list[FaceEncoding]) -> list[FaceEncoding]:
        for enc in value:
            if enc.model != FACE_MODEL_ID:
                raise ValueError(
                    f"encoding made by model {enc.model!r}; stations compare only {FACE_MODEL_ID!r} encodings"
                )
        return value


class EnrollResult(BaseModel):
    worker_id: str
    name: str
    version: int = Field(description="gallery version of this enrollment")
    samples: int = Field(description="face encodings stored")


class WorkerPublic(_Out):
    worker_id: str
    name: str
    phone: str | None
    status: Literal["active", "suspended"]
    samples: int
    created_at: datetime
    updated_at: datetime


class WorkersPublic(BaseModel):
    items: list[WorkerPublic]


class WorkerChanged(BaseModel):
    worker_id: str
    status: Literal["active", "suspended", "deleted"]
    version: int = Field(description="gallery version of this change")


class EntryPublic(_Out):
    event_id: str
    station_id: str
    worker_id: str | None
    worker_name: str | None = Field(description="null when nobody was recognised or the worker was deleted")
    kind: str
    decision: str
    reason: str
    distance: float | None
    second_distance: float | None
    frames: int | None
    face_px: int | None
    decision_ms: float | None
    gallery_version: int
    liveness: str | None = Field(default=None, description="off, pending, passed or failed (entry/2); null before")
    blinks: int | None = Field(default=None, description="blinks the liveness check counted (entry/2)")
    occurred_at: datetime = Field(description="station clock, UTC")
    received_at: datetime = Field(description="server clock, UTC")


class EntriesPage(BaseModel):
    items: list[EntryPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")
