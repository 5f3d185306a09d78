"""The face-encoding wire format.

An encoding is 128 float32 values (little-endian, base64) plus the id of the
model that produced it. Encodings from different models live in different
spaces and must never be compared: `FaceEncoding.vector()` refuses a model id
other than the one the caller expects.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.errors import MalformedPayload

EMBEDDING_DIM = 128
# dlib's ResNet face encoder fed with 5-point-landmark alignment (the
# face_recognition default). A different landmark model or encoder gives
# vectors that are not comparable, so it gets a different id.
FACE_MODEL_ID = "dlib_resnet_v1/sp5"

_B64_LEN = 4 * math.ceil(EMBEDDING_DIM * 4 / 3)

ModelId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/+-]+$")]


def encode_vector(vector: np.ndarray) -> str:
    """Serialise a 128-d vector as base64 of little-endian float32."""
    arr = np.asarray(vector, dtype="<f4").reshape(-1)
    if arr.shape != (EMBEDDING_DIM,):
        raise MalformedPayload(f"an encoding has {EMBEDDING_DIM} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise MalformedPayload("an encoding must not contain NaN or infinity")
    return base64.b64encode(arr.tobytes()).decode("ascii")


def decode_vector(data: str) -> np.ndarray:
    """Parse the base64 form back into a float32 vector of shape (128,)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MalformedPayload(f"encoding is not valid base64: {err}") from err
    if len(raw) != EMBEDDING_DIM * 4:
        raise MalformedPayload(f"an encoding has {EMBEDDING_DIM * 4} bytes, got {len(raw)}")
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vec)):
        raise MalformedPayload("an encoding must not contain NaN or infinity")
    return vec


class FaceEncoding(BaseModel):
    """One face encoding on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelId = Field(description="Id of the encoder that made the vector, e.g. dlib_resnet_v1/sp5")
    data: str = Field(min_length=_B64_LEN, max_length=_B64_LEN, description="base64 of 128 little-endian float32")

    @field_validator("data")
    @classmethod
    def _check_data(cls, value: str) -> str:
        decode_vector(value)
        return value

    @classmethod
    def from_vector(cls, vector: np.ndarray, model: str = FACE_MODEL_ID) -> "FaceEncoding":
        return cls(model=model, data=encode_vector(vector))

    def vector(self, expected_model: str = FACE_MODEL_ID) -> np.ndarray:
        """The vector, or MalformedPayload if it was made by another model."""
        if self.model != expected_model:
            raise MalformedPayload(
                f"encoding made by model {self.model!r}; this program compares only {expected_model!r}"
            )
        return decode_vector(self.data)
