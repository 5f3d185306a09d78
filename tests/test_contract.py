"""The MQTT contract: schemas, versions, the encoding format, hostile payloads."""

from __future__ import annotations

import base64
import json
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import (
    FACE_MODEL_ID,
    MAX_PAYLOAD_BYTES,
    ContractError,
    Decision,
    EntryEvent,
    FaceEncoding,
    GalleryChange,
    GalleryChangeMessage,
    GalleryOp,
    MalformedPayload,
    PayloadTooLarge,
    StationStatus,
    SyncAck,
    SyncReply,
    SyncRequest,
    decode,
    encode,
    topics,
)
from models.messages import MAX_CHANGES_PER_REPLY, MAX_ENCODINGS_PER_WORKER


def _vec(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, 128).astype(np.float32)


def test_encoding_round_trip_is_exact_float32() -> None:
    v = _vec(1)
    enc = FaceEncoding.from_vector(v)
    assert enc.model == FACE_MODEL_ID
    assert len(base64.b64decode(enc.data)) == 512
    np.testing.assert_array_equal(enc.vector(), v)


def test_encoding_from_another_model_is_never_compared() -> None:
    enc = FaceEncoding.from_vector(_vec(), model="dlib_resnet_v1/sp68")
    with pytest.raises(MalformedPayload, match="sp68"):
        enc.vector(FACE_MODEL_ID)


@pytest.mark.parametrize(
    "vector, problem",
    [(np.zeros(127), "128 values"), (np.full(128, np.nan), "NaN"), (np.full(128, np.inf), "NaN or infinity")],
)
def test_bad_vectors_are_refused(vector: np.ndarray, problem: str) -> None:
    with pytest.raises(MalformedPayload, match=problem):
        FaceEncoding.from_vector(vector)


def test_encoding_with_wrong_length_or_bad_base64_is_refused() -> None:
    # Building a message directly raises pydantic's ValidationError (a ValueError);
    # decode() turns the same problems into a ContractError.
    with pytest.raises(ValueError):
        FaceEncoding(model=FACE_MODEL_ID, data="A" * 684 + "!!!!")
    with pytest.raises(ValueError, match="at least 684 characters"):
        FaceEncoding(model=FACE_MODEL_ID, data=base64.b64encode(b"\0" * 508).decode())


def test_every_message_round_trips_through_the_wire_form() -> None:
    change = GalleryChange(
        version=7, op=GalleryOp.UPSERT, worker_id="w1", display_name="李师傅", encodings=(FaceEncoding.from_vector(_vec()),)
    )
    messages = [
        EntryEvent(station_id="hz-01", decision=Decision.GRANTED, worker_id="w1", reason="matched"),
        StationStatus(station_id="hz-01", online=True, gallery_version=7),
        GalleryChangeMessage(change=change),
        SyncRequest(station_id="hz-01", since_version=3),
        SyncReply(request_id=uuid.uuid4(), changes=(change,), latest_version=7),
        SyncAck(station_id="hz-01", version=7),
    ]
    for msg in messages:
        wire = encode(msg)
        assert json.loads(wire)["schema"].endswith("/1")
        assert decode(wire, type(msg)) == msg


def test_entry_times_carry_a_timezone() -> None:
    wire = json.loads(encode(EntryEvent(station_id="s1", decision=Decision.DENIED)))
    wire["occurred_at"] = "2026-11-29T03:00:00"  # naive: ambiguous across stations
    with pytest.raises(MalformedPayload, match="occurred_at"):
        decode(json.dumps(wire).encode(), EntryEvent)


@pytest.mark.parametrize(
    "payload, error",
    [
        (b"", MalformedPayload),
        (b"\xff\xfe", MalformedPayload),
        (b"[1, 2]", MalformedPayload),
        (b'{"schema": "entry/3", "station_id": "s1", "decision": "granted"}', MalformedPayload),
        (b'{"schema": "entry/1", "station_id": "s1", "decision": "granted", "scores": {"blinks": 1}}', MalformedPayload),
        (b'{"schema": "entry/1", "station_id": "S1/#", "decision": "granted"}', MalformedPayload),
        (b'{"schema": "entry/1", "station_id": "s1", "decision": "open sesame"}', MalformedPayload),
        (b'{"schema": "entry/1", "station_id": "s1", "decision": "granted", "admin": true}', MalformedPayload),
        (b"[" * 100_000 + b"]" * 100_000, MalformedPayload),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), PayloadTooLarge),
    ],
)
def test_hostile_payloads_get_a_clear_error(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        decode(payload, EntryEvent)
    assert str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_no_payload_crashes_the_decoder(payload: bytes) -> None:
    for cls in (EntryEvent, GalleryChangeMessage, SyncRequest, SyncReply, SyncAck, StationStatus):
        try:
            decode(payload, cls)
        except ContractError:
            pass


def test_delete_changes_carry_no_face_data() -> None:
    with pytest.raises(ValueError, match="must not carry encodings"):
        GalleryChange(version=1, op=GalleryOp.DELETE, worker_id="w", encodings=(FaceEncoding.from_vector(_vec()),))


def test_sizes_are_bounded_so_a_full_reply_page_fits_one_message() -> None:
    encs = tuple(FaceEncoding.from_vector(_vec(i)) for i in range(MAX_ENCODINGS_PER_WORKER))
    with pytest.raises(ValueError, match="at most 16"):
        GalleryChange(version=1, op=GalleryOp.UPSERT, worker_id="w", encodings=encs + encs[:1])
    # A page of typical workers (3 samples each) stays under the payload limit.
    page = tuple(
        GalleryChange(version=i + 1, op=GalleryOp.UPSERT, worker_id=f"w{i}", display_name="x" * 20, encodings=encs[:3])
        for i in range(100)
    )
    assert len(encode(SyncReply(request_id=uuid.uuid4(), changes=page, latest_version=100))) < MAX_PAYLOAD_BYTES
    assert MAX_CHANGES_PER_REPLY >= 100


@pytest.mark.parametrize("bad", ["", "A", "a/b", "a+", "a#", "-a", "a" * 64, "站点"])
def test_station_ids_cannot_break_topics(bad: str) -> None:
    with pytest.raises(ValueError):
        topics.entry(bad)


def test_topics_name_the_station_and_parse_back() -> None:
    assert topics.entry("hz-01") == "ws/v1/station/hz-01/entry"
    assert topics.station_of(topics.sync_ack("hz-01")) == "hz-01"
    with pytest.raises(ValueError):
        topics.station_of("ws/v1/gallery/change")
    with pytest.raises(ValueError):
        topics.station_of("other/v1/station/x/entry")
