"""Entry, status and ack ingest over a real mosquitto into a real SQLite file."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa

from models import topics
from models.messages import (
    MAX_PAYLOAD_BYTES,
    Decision,
    EntryEvent,
    EventKind,
    StationStatus,
    SyncAck,
    encode,
)
from server.runtime import ServerRuntime
from server.tables import Entry
from tests.support.services import Mosquitto

from .conftest import mqtt_link, publish_acked, start_server, wait_until

pytestmark = pytest.mark.broker


def _entry_count(server: ServerRuntime) -> int:
    assert server.engine is not None
    with server.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(Entry)).scalar_one())


def _event_ids(server: ServerRuntime) -> list[str]:
    assert server.engine is not None
    with server.engine.connect() as conn:
        return list(conn.execute(sa.select(Entry.event_id)).scalars())


def test_entries_are_stored_once_per_event_id(
    server: ServerRuntime, api: httpx.Client, station: str, mosquitto: Mosquitto
) -> None:
    assert server.ingest is not None
    occurred = datetime(2025, 6, 1, 21, 15, tzinfo=timezone(timedelta(hours=8)))
    first = EntryEvent(
        station_id=station,
        decision=Decision.DENIED,
        reason="unknown face",
        occurred_at=occurred,
        decision_ms=180.5,
        gallery_version=3,
    )
    burst = [EntryEvent(station_id=station, decision=Decision.GRANTED, worker_id=f"w{i % 7}") for i in range(200)]
    with mqtt_link(mosquitto) as link:
        # The same event twice (a redelivery), then a burst in which every 10th event is sent again.
        link.publish(topics.entry(station), encode(first))
        link.publish(topics.entry(station), encode(first))
        for i, event in enumerate(burst):
            link.publish(topics.entry(station), encode(event))
            if i % 10 == 0:
                link.publish(topics.entry(station), encode(event))
        wait_until(lambda: server.ingest.counters["stored"] == 201, 30, "201 stored events")
        wait_until(lambda: server.ingest.counters["duplicates"] == 21, 10, "21 duplicates")
    ids = _event_ids(server)
    assert len(ids) == len(set(ids)) == 201
    assert set(ids) == {str(e.event_id) for e in [first, *burst]}

    page = api.get("/api/entries", params={"decision": "denied"}).json()
    (item,) = page["items"]
    assert item["event_id"] == str(first.event_id)
    assert item["reason"] == "unknown face" and item["decision_ms"] == 180.5 and item["gallery_version"] == 3
    assert datetime.fromisoformat(item["occurred_at"]) == occurred
    assert item["worker_id"] is None and item["worker_name"] is None
    assert server.ingest.counters["errors"] == 0


def _hostile_payloads(station: str) -> list[tuple[str, bytes, str]]:
    good = json.loads(encode(EntryEvent(station_id=station, decision=Decision.GRANTED, worker_id="w1")))
    other = "s2-not-registered"
    return [
        (topics.entry(station), b"not json at all", "rejected_malformed"),
        (topics.entry(station), b"\xff\xfe\x00garbage", "rejected_malformed"),
        (topics.entry(station), b"[1, 2, 3]", "rejected_malformed"),
        (topics.entry(station), b"[" * 100_000 + b"]" * 100_000, "rejected_malformed"),
        (topics.entry(station), json.dumps({**good, "schema": "entry/9"}).encode(), "rejected_malformed"),
        (topics.entry(station), json.dumps({**good, "decision": "maybe"}).encode(), "rejected_malformed"),
        (topics.entry(station), json.dumps({**good, "extra": 1}).encode(), "rejected_malformed"),
        (topics.entry(station), json.dumps({**good, "occurred_at": "2025-01-01T00:00"}).encode(), "rejected_malformed"),
        (topics.entry(station), json.dumps({**good, "reason": "x" * 300}).encode(), "rejected_malformed"),
        (topics.entry(station), json.dumps({**good, "pad": "x" * MAX_PAYLOAD_BYTES}).encode(), "rejected_too_large"),
        (topics.entry(station), json.dumps({**good, "station_id": other}).encode(), "rejected_topic_mismatch"),
        ("ws/v1/station/UPPER/entry", json.dumps({**good, "station_id": "UPPER"}).encode(), "rejected_topic_mismatch"),
        (topics.entry(other), json.dumps({**good, "station_id": other}).encode(), "rejected_unknown_station"),
        (topics.status(station), b'{"schema": "status/1"}', "rejected_malformed"),
        (topics.status(other), encode(StationStatus(station_id=other, online=True)), "rejected_unknown_station"),
        (topics.sync_ack(station), encode(SyncAck(station_id=other, version=1)), "rejected_topic_mismatch"),
        (topics.sync_request(station), b"{}", "rejected_malformed"),
        (topics.sync_request(other), b'{"schema":"sync_request/1","station_id":"s2-not-registered","since_version":0}',
         "rejected_unknown_station"),
    ]


def test_hostile_payloads_are_counted_and_not_stored(
    server: ServerRuntime, station: str, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.ingest is not None
    before = server.ingest.counters
    cases = _hostile_payloads(station)
    expected: dict[str, int] = {}
    for _topic, _payload, counter in cases:
        expected[counter] = expected.get(counter, 0) + 1
    marker = EntryEvent(station_id=station, decision=Decision.GRANTED, kind=EventKind.QR)
    with caplog.at_level("WARNING", logger="server.ingest"), mqtt_link(mosquitto) as link:
        for topic, payload, _counter in cases:
            assert link.publish(topic, payload)
        # One client's QoS 1 messages arrive in order: once the marker is stored, all were handled.
        link.publish(topics.entry(station), encode(marker))
        wait_until(lambda: server.ingest.counters["stored"] == before["stored"] + 1, 20, "the marker event")
    after = server.ingest.counters
    for counter, n in expected.items():
        assert after[counter] - before[counter] == n, counter
    assert after["errors"] == before["errors"] == 0
    assert _event_ids(server) == [str(marker.event_id)]
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused message")]
    assert len(refusals) == len(cases)
    assert max(len(r.getMessage()) for r in refusals) < 700  # one line, never a payload dump
    assert all("\n" not in r.getMessage() for r in refusals)


def test_status_and_ack_update_the_station(
    server: ServerRuntime, api: httpx.Client, station: str, mosquitto: Mosquitto
) -> None:
    assert server.ingest is not None
    seen_at = datetime.now(timezone.utc) - timedelta(seconds=5)
    online = StationStatus(
        station_id=station, online=True, agent_version="0.1.0", gallery_version=4, outbox_depth=12, at=seen_at
    )
    with mqtt_link(mosquitto) as link:
        link.publish(topics.status(station), encode(online), retain=True)
        wait_until(lambda: api.get("/api/stations").json()["items"][0]["online"], what="station online")
        (row,) = api.get("/api/stations").json()["items"]
        assert (row["agent_version"], row["gallery_version_acked"], row["outbox_depth"]) == ("0.1.0", 4, 12)
        assert datetime.fromisoformat(row["last_seen_at"]) == seen_at
        link.publish(topics.sync_ack(station), encode(SyncAck(station_id=station, version=9)))
        wait_until(lambda: api.get("/api/stations").json()["items"][0]["gallery_version_acked"] == 9, what="ack")
        # The last will, composed when the station connected, carries stale numbers.
        will = StationStatus(station_id=station, online=False, gallery_version=2, outbox_depth=50)
        link.publish(topics.status(station), encode(will))
        wait_until(lambda: not api.get("/api/stations").json()["items"][0]["online"], what="station offline")
    (row,) = api.get("/api/stations").json()["items"]
    assert datetime.fromisoformat(row["last_seen_at"]) == seen_at  # the will does not count as seen
    assert (row["gallery_version_acked"], row["outbox_depth"]) == (9, 12)


def test_entries_sent_while_the_server_is_down_arrive_after_restart(
    server: ServerRuntime, station: str, mosquitto: Mosquitto
) -> None:
    """The server's persistent session: the broker queues QoS 1 entries while it is away."""
    settings = server.settings
    server.stop()
    events = [EntryEvent(station_id=station, decision=Decision.GRANTED, event_id=uuid.uuid4()) for _ in range(20)]
    with mqtt_link(mosquitto) as link:
        publish_acked(link, [(topics.entry(station), encode(e)) for e in events])
    restarted = start_server(settings, mosquitto)
    try:
        wait_until(lambda: _entry_count(restarted) == 20, 20, "queued entries")
        assert set(_event_ids(restarted)) == {str(e.event_id) for e in events}
    finally:
        restarted.stop()
