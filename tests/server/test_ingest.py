"""Entry, status and ack ingest over a real mosquitto into a real SQLite file, and into PostgreSQL.

Entries are acknowledged to the broker only after their commit, so a failing
database or a server that stops during an outage loses none.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
from server.config import ServerSettings
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.ingest import Ingest
from server.runtime import ServerRuntime
from server.stations import register_station
from server.tables import Base, Entry
from tests.support.services import Mosquitto, postgres_url  # noqa: F401  (postgres_url: a fixture)

from .conftest import make_settings, mqtt_link, publish_acked, start_server, wait_until

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
    # (A late start-up probe of the "zz-probe" station may be refused meanwhile: not one of these cases.)
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused message") and "zz-probe" not in
                r.getMessage()]
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


# -- acknowledged only once durable; PostgreSQL; heartbeats; scale-out (sync issue) -------------------------



@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """The server's database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'server.db'}"
    return request.getfixturevalue("postgres_url")


def _rename_entries(url: str, to: str, back: bool = False) -> None:
    """Take the entries table away (or give it back): to the server, the database is failing."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            src, dst = (to, "entries") if back else ("entries", to)
            conn.exec_driver_sql(f"ALTER TABLE {src} RENAME TO {dst}")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrations_and_ingest_on_postgresql(
    tmp_path, mosquitto: Mosquitto, postgres_url: str  # noqa: ANN001
) -> None:
    settings = make_settings(tmp_path, mosquitto, database_url=postgres_url)
    server = start_server(settings, mosquitto)  # migrates the empty database
    try:
        assert server.engine is not None and server.engine.dialect.name == "postgresql"
        with server.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert list(compare_metadata(ctx, Base.metadata)) == []
        with make_sessionmaker(server.engine)() as session:
            register_station(session=session, station_id="pg-1", name="On PostgreSQL")
        events = [EntryEvent(station_id="pg-1", decision=Decision.GRANTED, worker_id=f"w{i}") for i in range(300)]
        with mqtt_link(mosquitto) as link:
            publish_acked(link, [(topics.entry("pg-1"), encode(e)) for e in events + events[:50]])
        assert server.ingest is not None
        wait_until(lambda: server.ingest.counters["stored"] + server.ingest.counters["duplicates"] == 350, 30, "350")
        assert server.ingest.counters["stored"] == 300 and server.ingest.counters["duplicates"] == 50
        ids = _event_ids(server)
        assert len(ids) == 300 and set(ids) == {str(e.event_id) for e in events}
    finally:
        server.stop()


def test_a_failing_database_loses_no_entry(tmp_path, mosquitto: Mosquitto, database_url: str) -> None:  # noqa: ANN001
    """Entries are acknowledged to the broker only after the commit: an outage, even a crash during it, loses none."""
    settings = make_settings(tmp_path, mosquitto, database_url=database_url)
    server = start_server(settings, mosquitto)
    assert server.ingest is not None and server.engine is not None
    with make_sessionmaker(server.engine)() as session:
        register_station(session=session, station_id="st-db", name="DB outage")
    warm = EntryEvent(station_id="st-db", decision=Decision.GRANTED)
    first = [EntryEvent(station_id="st-db", decision=Decision.GRANTED, reason=f"during outage {i}") for i in range(30)]
    second = [EntryEvent(station_id="st-db", decision=Decision.DENIED, reason=f"before crash {i}") for i in range(30)]
    try:
        with mqtt_link(mosquitto) as link:
            publish_acked(link, [(topics.entry("st-db"), encode(warm))])
            wait_until(lambda: server.ingest.counters["stored"] == 1, 10, "the first entry")
            # 1. The database fails for a while and comes back: the ingest retries, nothing is lost.
            _rename_entries(database_url, "entries_away")
            publish_acked(link, [(topics.entry("st-db"), encode(e)) for e in first])
            wait_until(lambda: server.ingest.counters["db_errors"] >= 2, 15, "failed attempts")
            assert server.ingest.counters["stored"] == 1
            _rename_entries(database_url, "entries_away", back=True)
            wait_until(lambda: server.ingest.counters["stored"] == 31, 20, "the entries of the outage")
            # 2. The database fails and the server goes away before it comes back.
            _rename_entries(database_url, "entries_away")
            publish_acked(link, [(topics.entry("st-db"), encode(e)) for e in second])
            wait_until(lambda: server.ingest.counters["db_errors"] >= 4, 15, "failed attempts")
            server.stop()
        _rename_entries(database_url, "entries_away", back=True)
        server = start_server(settings, mosquitto)  # same client id: the broker redelivers what was never acked
        wait_until(lambda: _entry_count(server) == 61, 30, "every entry after the restart")
        ids = _event_ids(server)
        assert len(ids) == len(set(ids)) == 61
        assert set(ids) == {str(e.event_id) for e in [warm, *first, *second]}
        assert server.ingest is not None and server.ingest.counters["errors"] == 0
    finally:
        server.stop()


@pytest.mark.postgres
def test_an_event_postgresql_cannot_store_is_refused_alone(
    tmp_path, mosquitto: Mosquitto, postgres_url: str, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    """A NUL character passes the contract but not PostgreSQL's text type: that event is counted, the rest stored."""
    settings = make_settings(tmp_path, mosquitto, database_url=postgres_url)
    server = start_server(settings, mosquitto)
    try:
        assert server.ingest is not None and server.engine is not None
        with make_sessionmaker(server.engine)() as session:
            register_station(session=session, station_id="pg-nul", name="NUL")
        good = [EntryEvent(station_id="pg-nul", decision=Decision.GRANTED, reason=f"ok {i}") for i in range(20)]
        poison = EntryEvent(station_id="pg-nul", decision=Decision.DENIED, reason="bad\x00byte")
        with caplog.at_level("WARNING", logger="server.ingest"), mqtt_link(mosquitto) as link:
            batch = [*good[:10], poison, *good[10:]]
            publish_acked(link, [(topics.entry("pg-nul"), encode(e)) for e in batch])
            wait_until(lambda: server.ingest.counters["rejected_unstorable"] == 1, 20, "the refusal")
            wait_until(lambda: server.ingest.counters["stored"] == 20, 20, "the good entries")
        assert set(_event_ids(server)) == {str(e.event_id) for e in good}
        prefix = f"refused message on {topics.entry('pg-nul')}"
        refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]
        assert len(refusals) == 1 and str(poison.event_id) in refusals[0]
        assert server.ingest.counters["errors"] == 0
    finally:
        server.stop()


def test_heartbeats_are_stored_and_shown(
    server: ServerRuntime, api: httpx.Client, station: str, mosquitto: Mosquitto
) -> None:
    at = datetime.now(timezone.utc) - timedelta(seconds=2)
    beat = StationStatus(
        station_id=station, online=True, agent_version="0.2.0", gallery_version=7, outbox_depth=3, at=at,
        camera="ok", door="locked", clock_offset_s=-1.25, uptime_s=3600.5, outbox_bytes=1800,
        outbox_limit_bytes=64 * 2**20, outbox_alarm=False, outbox_refused=0,
    )
    with mqtt_link(mosquitto) as link:
        publish_acked(link, [(topics.status(station), encode(beat))])
        wait_until(lambda: api.get(f"/api/stations/{station}/status").json()["heartbeat_at"] is not None, 10, "beat")
        status = api.get(f"/api/stations/{station}/status").json()
        assert (status["camera_state"], status["door_state"], status["clock_offset_s"]) == ("ok", "locked", -1.25)
        assert (status["uptime_s"], status["outbox_depth"], status["outbox_bytes"]) == (3600.5, 3, 1800)
        assert status["agent_version"] == "0.2.0" and status["gallery_version_acked"] == 7 and status["online"]
        assert datetime.fromisoformat(status["heartbeat_at"]) == at
        alarm = beat.model_copy(update={"outbox_alarm": True, "outbox_refused": 4, "door": "unlocked"})
        publish_acked(link, [(topics.status(station), encode(alarm))])
        wait_until(lambda: api.get(f"/api/stations/{station}/status").json()["outbox_alarm"] is True, 10, "alarm")
        status = api.get(f"/api/stations/{station}/status").json()
        assert status["outbox_refused"] == 4 and status["door_state"] == "unlocked"
    assert api.get("/api/stations/nowhere/status").status_code == 404


def test_two_ingest_workers_share_the_load(tmp_path, mosquitto: Mosquitto) -> None:  # noqa: ANN001
    """MQTT 5 shared subscription: each entry goes to one of two ingest processes, and is stored once."""
    url = f"sqlite:///{tmp_path / 'shared' / 'server.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    with make_sessionmaker(engine)() as session:
        register_station(session=session, station_id="st-share", name="Shared")
    workers = []
    try:
        for n in range(2):
            s: ServerSettings = make_settings(
                tmp_path, mosquitto, database_url=url, mqtt_protocol="5", mqtt_shared_group="ingest",
                mqtt_client_id=f"ws-ingest-{n}",
            )
            ingest = Ingest(s, engine)
            ingest.start()
            assert ingest.wait_connected(10)
            workers.append(ingest)
        with mqtt_link(mosquitto) as link:
            # Probes from an unregistered station until both workers have refused one: both subscriptions are live.
            probe = encode(StationStatus(station_id="zz-probe", online=True))
            wait_until(
                lambda: link.publish(topics.status("zz-probe"), probe)
                and all(w.counters["rejected_unknown_station"] for w in workers),
                10, "both workers subscribed",
            )
            events = [EntryEvent(station_id="st-share", decision=Decision.GRANTED, reason=f"{i}") for i in range(400)]
            publish_acked(link, [(topics.entry("st-share"), encode(e)) for e in events])
            wait_until(lambda: sum(w.counters["stored"] for w in workers) == 400, 30, "400 stored")
        assert all(w.counters["stored"] > 50 for w in workers), [w.counters["stored"] for w in workers]
        with engine.connect() as conn:
            ids = list(conn.execute(sa.select(Entry.event_id)).scalars())
        assert len(ids) == len(set(ids)) == 400
    finally:
        for w in workers:
            w.stop()
        engine.dispose()
