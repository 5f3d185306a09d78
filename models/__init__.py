"""The MQTT contract between stations (edge agents) and the central server.

This package is the one place where topics, payload schemas, their versions and
the face-encoding wire format are declared. Both sides import it; neither
re-declares any of it. It depends only on pydantic and numpy, so it can be
imported by every program, including the Pi's edge agent.

Exceptions::

    ContractError (ValueError)
     ├── PayloadTooLarge      -- more bytes than MAX_PAYLOAD_BYTES
     ├── MalformedPayload     -- not JSON, or JSON that fails the schema
     └── TopicMismatch        -- the topic does not fit the message or station
"""

from models.encoding import (
    EMBEDDING_DIM,
    FACE_MODEL_ID,
    FaceEncoding,
    decode_vector,
    encode_vector,
)
from models.errors import ContractError, MalformedPayload, PayloadTooLarge, TopicMismatch
from models.messages import (
    MAX_PAYLOAD_BYTES,
    Decision,
    EntryEvent,
    EventKind,
    GalleryChange,
    GalleryChangeMessage,
    GalleryOp,
    StationStatus,
    SyncAck,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)
from models import topics

__all__ = [
    "EMBEDDING_DIM",
    "FACE_MODEL_ID",
    "MAX_PAYLOAD_BYTES",
    "ContractError",
    "Decision",
    "EntryEvent",
    "EventKind",
    "FaceEncoding",
    "GalleryChange",
    "GalleryChangeMessage",
    "GalleryOp",
    "MalformedPayload",
    "PayloadTooLarge",
    "StationStatus",
    "SyncAck",
    "SyncReply",
    "SyncRequest",
    "TopicMismatch",
    "decode",
    "decode_vector",
    "encode",
    "encode_vector",
    "topics",
]
