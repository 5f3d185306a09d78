"""``entry/2``: the liveness evidence in an entry's scores, and what stays ``entry/1`` byte for byte."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from models import Decision, EntryEvent, MalformedPayload, decode, encode
from models.messages import EventKind, Scores

AT = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
EVENT = uuid.UUID("12345678-1234-5678-1234-567812345678")
# The wire form of this entry before entry/2 existed: a receiver of the previous version reads exactly this.
ENTRY_1 = (
    '{"schema":"entry/1","event_id":"12345678-1234-5678-1234-567812345678","station_id":"hz-01","kind":"face",'
    '"decision":"granted","worker_id":"w1","reason":"matched","scores":{"distance":0.31,"second_distance":0.72,'
    '"frames":3,"face_px":120},"occurred_at":"2026-11-29T03:00:00Z","decision_ms":640.0,"gallery_version":7}'
)


def entry(**scores: object) -> EntryEvent:
    return EntryEvent(
        event_id=EVENT, station_id="hz-01", kind=EventKind.FACE, decision=Decision.GRANTED, worker_id="w1",
        reason="matched", scores=Scores(distance=0.31, second_distance=0.72, frames=3, face_px=120, **scores),
        occurred_at=AT, decision_ms=640.0, gallery_version=7,
    )


def test_an_entry_without_liveness_evidence_is_still_entry_1_byte_for_byte() -> None:
    assert encode(entry()).decode() == ENTRY_1
    assert decode(ENTRY_1.encode(), EntryEvent) == entry()


def test_liveness_evidence_makes_it_entry_2_and_round_trips() -> None:
    live = entry(liveness="passed", blinks=0, head_motion=0.134, liveness_ms=480.0)
    wire = json.loads(encode(live))
    assert wire["schema"] == "entry/2"
    assert wire["scores"] == {"distance": 0.31, "second_distance": 0.72, "frames": 3, "face_px": 120,
                              "liveness": "passed", "blinks": 0, "head_motion": 0.134, "liveness_ms": 480.0}
    back = decode(encode(live), EntryEvent)
    assert back == live and back.scores.head_motion == 0.134
    # Only the fields used are written: a station with liveness off says just that.
    off = json.loads(encode(entry(liveness="off")))
    assert off["schema"] == "entry/2" and off["scores"]["liveness"] == "off" and "blinks" not in off["scores"]


def test_an_entry_1_carrying_liveness_evidence_is_refused_with_a_reason() -> None:
    wire = json.loads(ENTRY_1)
    wire["scores"]["blinks"] = 1
    with pytest.raises(MalformedPayload, match="entry/2"):
        decode(json.dumps(wire).encode(), EntryEvent)
    # The same message declared as entry/2 is fine: receivers accept both versions.
    wire["schema"] = "entry/2"
    assert decode(json.dumps(wire).encode(), EntryEvent).scores.blinks == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("liveness", "maybe"), ("blinks", -1), ("blinks", 1001), ("head_motion", -0.1), ("head_motion", 10.5),
     ("liveness_ms", 3_600_001), ("liveness_ms", -1), ("live_ms", 5)],
)
def test_bad_liveness_fields_are_refused(field: str, value: object) -> None:
    wire = json.loads(encode(entry(liveness="passed")))
    wire["scores"][field] = value
    with pytest.raises(MalformedPayload, match="scores"):
        decode(json.dumps(wire).encode(), EntryEvent)
