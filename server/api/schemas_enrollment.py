"""Request and response bodies of the enrollment API (server/api/routes/enrollment.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from models.encoding import FACE_MODEL_ID, FaceEncoding
from server.api.schemas import Name, Phone
from server.tables import WORKER_CATEGORIES

MAX_SAMPLES = 5
MAX_THUMBNAIL_B64 = 64 * 1024
"""A thumbnail is ~160 px (a few KB); anything far larger is not one of ours."""

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Username = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreate(_In):
    place: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        description="where the session is held (a station, a union office)"
    )
    starts_at: AwareDatetime
    ends_at: AwareDatetime = Field(description="must be later than starts_at")
    staff: list[Username] = Field(default_factory=list, max_length=50, description="user names of the staff assigned")
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""


class SessionPublic(BaseModel):
    session_id: int
    place: str
    starts_at: datetime
    ends_at: datetime
    note: str
    created_by: str
    staff: list[str]
    enrolled: int = Field(description="workers enrolled at this session so far")


class SessionsPublic(BaseModel):
    items: list[SessionPublic]


class ProblemPublic(BaseModel):
    code: str = Field(description="no_face, several_faces, too_small, too_dark, too_bright, blurred, not_frontal, "
                      "eyes_closed, unreadable_image, image_too_large")
    message: str = Field(description="what to do, in the request's language")


class DuplicatePublic(BaseModel):
    worker_id: str
    name: str
    distance: float


class SampleChecked(BaseModel):
    """The verdict on one photo; 200 when usable, 422 (same body, plus ``detail``) when not."""

    ok: bool
    problems: list[ProblemPublic]
    face_px: int = Field(description="the face's size in pixels (0 when no single face was found)")
    encoding: FaceEncoding | None = Field(description="the photo's template, to send back with the enrollment")
    thumbnail_b64: str | None = Field(description="a small JPEG of the face, base64 (kept only if consent allows)")
    duplicate: DuplicatePublic | None = Field(description="an enrolled worker with the same face: warn before saving")
    measurements: dict[str, float | None] = Field(default_factory=dict, description="sharpness, brightness, yaw, ear")


class ConsentIn(_In):
    text_version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] = Field(
        description="version of the consent text the worker agreed to (enroll/messages.py CONSENT_TEXTS)"
    )
    allows_photo: bool = Field(default=False, description="the worker also agreed that a small photo is kept")


class EnrollmentCreate(_In):
    name: Name
    phone: Phone | None = None
    category: str | None = Field(default=None, description=", ".join(WORKER_CATEGORIES))
    employer: Text | None = Field(default=None, description="employer or platform")
    valid_until: AwareDatetime | None = None
    session_id: int | None = Field(default=None, ge=1)
    consent: ConsentIn | None = Field(default=None, description="required: nothing is stored without it")
    encodings: list[FaceEncoding] = Field(min_length=1, max_length=MAX_SAMPLES)
    thumbnail_b64: str | None = Field(default=None, max_length=MAX_THUMBNAIL_B64)
    allow_duplicate: bool = Field(default=False, description="save even though the face matches an enrolled worker")

    @field_validator("encodings")
    @classmethod
    def _our_model(cls, value: list[FaceEncoding]) -> list[FaceEncoding]:
        for enc in value:
            if enc.model != FACE_MODEL_ID:
                raise ValueError(f"encoding made by model {enc.model!r}; stations compare only {FACE_MODEL_ID!r}")
        return value

    @field_validator("employer")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class EnrollmentCreated(BaseModel):
    worker_id: str
    name: str
    version: int = Field(description="gallery version of this enrollment")
    samples: int
    photo_kept: bool


class ConsentWithdrawn(BaseModel):
    worker_id: str
    version: int = Field(description="gallery version that removes the face from the stations")
    message: str
