"""Enrollment sync, station status and the outbox against a real mosquitto process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from edge.config import EdgeSettings
from edge.store import OUTBOX_ROW_OVERHEAD, EdgeStore
from edge.sync import StationSync, build_link
from edge.sync_config import OutboxConfig, StatusConfig
from models import topics
from models.messages import Decision, EntryEvent, GalleryChangeMessage, SyncReply, encode
from tests.edge.server_side import ServerSide, delete, upsert
from tests.support.services import Mosquitto

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
STATION = "st-sync"


def settings_for(broker: Mosquitto, data_dir: Path, station: str = STATION) -> EdgeSettings:
    return EdgeSettings.build(
        station_id=station, data_dir=data_dir,
        mqtt={"host": broker.host, "port": broker.port, "client_id": f"station-{station}-{uuid.uuid4().hex[:6]}",
              "max_in_flight": 8},
    )


class Station:
    """A StationSync with its own store, as the agent wires it."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.store = EdgeStore.open(settings.data_dir)
        self.galleries: list[tuple[int, tuple[str, ...]]] = []
        self.sync = StationSync(
            settings, self.store, build_link(settings),
            on_gallery=lambda g, names: self.galleries.append((g.version, g.identities)),
        )

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:  # noqa: ANN001
        return self.sync.holder.wait_for(predicate, timeout)

    def close(self) -> None:
        self.sync.stop()
        self.store.close()


@pytest.fixture
def server(mosquitto: Mosquitto) -> Iterator[ServerSide]:
    with ServerSide(mosquitto.host, mosquitto.port) as s:
        yield s


@pytest.fixture
def station(mosquitto: Mosquitto, tmp_path: Path, server: ServerSide) -> Iterator[Station]:
    st = Station(settings_for(mosquitto, tmp_path / "edge"))
    yield st
    st.close()


def test_on_connect_the_station_catches_up_and_acks(server: ServerSide, station: Station) -> None:
    server.add(upsert(1, "alice"), upsert(2, "bob"), upsert(3, "carol"), delete(4, "bob"))
    station.sync.start()
    assert station.wait_for(lambda g: g.version == 4)
    assert sorted(station.sync.holder.gallery.identities) == ["alice", "carol"]
    assert station.sync.holder.names["carol"] == "Carol"
    assert server.wait(lambda: any(a.version == 4 and a.station_id == STATION for a in server.acks))
    assert server.requests[0].since_version == 0 and server.requests[0].station_id == STATION
    assert server.wait(lambda: any(s.online and s.gallery_version == 4 for s in server.statuses))
    assert station.galleries[-1] == (4, ("alice", "carol"))
    assert station.store.gallery_version() == 4  # persisted, not only in memory


def test_live_changes_apply_and_a_gap_triggers_a_sync(server: ServerSide, station: Station) -> None:
    server.add(upsert(1, "alice"))
    station.sync.start()
    assert station.wait_for(lambda g: g.version == 1)
    server.broadcast(upsert(2, "bob"))
    assert station.wait_for(lambda g: g.version == 2 and "bob" in g.identities)
    assert server.wait(lambda: any(a.version == 2 for a in server.acks))
    n_requests = len(server.requests)

    # 3 and 4 never reach the station live; 5 (deleting alice) does and must take effect at once.
    server.add(upsert(3, "carol"), upsert(4, "dave"))
    server.auto_answer = False
    server.broadcast(delete(5, "alice"))
    assert station.wait_for(lambda g: "alice" not in g.identities)
    assert station.store.gallery_version() == 2  # not advanced past the gap
    assert server.wait(lambda: len(server.requests) > n_requests)
    request = server.requests[-1]
    assert request.since_version == 2
    server.answer(request)
    assert station.wait_for(lambda g: g.version == 5)
    assert sorted(station.sync.holder.gallery.identities) == ["bob", "carol", "dave"]
    assert server.wait(lambda: any(a.version == 5 for a in server.acks))


def test_a_paged_snapshot_is_applied_atomically(server: ServerSide, station: Station) -> None:
    server.add(upsert(1, "old"))
    station.sync.start()
    assert station.wait_for(lambda g: g.version == 1)
    for v in range(2, 12):
        server.add(upsert(v, f"w{v:02d}"))
    server.add(delete(12, "old"))
    server.snapshot_next, server.page_size, server.auto_answer = True, 4, False
    station.sync.request_sync()
    assert server.wait(lambda: len(server.requests) >= 2)
    request = server.requests[-1]
    assert len(server.replies(request)) == 3
    server.answer(request, pages=[0, 1])  # 2 of 3 pages
    time.sleep(1.0)
    assert station.sync.holder.gallery.identities == ("old",)  # nothing half-applied
    assert station.store.gallery_version() == 1
    # A page missing (0, then 2): the station drops what it buffered and asks again.
    n = len(server.requests)
    server.answer(request, pages=[0, 2])
    assert server.wait(lambda: len(server.requests) > n)
    assert station.sync.holder.gallery.identities == ("old",)
    server.answer(server.requests[-1])
    assert station.wait_for(lambda g: g.version == 12)
    assert sorted(station.sync.holder.gallery.identities) == [f"w{v:02d}" for v in range(2, 12)]
    assert server.wait(lambda: any(a.version == 12 for a in server.acks))


def test_replies_to_an_old_request_are_ignored(server: ServerSide, station: Station) -> None:
    server.auto_answer = False
    station.sync.start()
    assert server.wait(lambda: len(server.requests) >= 1)
    stale = SyncReply(request_id=uuid.uuid4(), changes=(upsert(1, "mallory"),), latest_version=1)
    server.publish_raw(topics.sync_reply(STATION), encode(stale))
    server.add(upsert(1, "alice"))
    server.answer(server.requests[-1])
    assert station.wait_for(lambda g: g.version == 1)
    assert station.sync.holder.gallery.identities == ("alice",)
    assert station.sync.stats.stale_replies == 1


def test_bad_payloads_are_counted_and_ignored(server: ServerSide, station: Station) -> None:
    station.sync.start()
    assert server.wait(lambda: len(server.acks) >= 1)  # synced (empty)
    bad = [b"", b"not json", b"[1,2]", b'{"schema":"gallery_change/1"}', b"\xff\xfe" * 10, b"{" * 5000,
           encode(GalleryChangeMessage(change=upsert(1, "x"))).replace(b'"upsert"', b'"explode"')]
    for payload in bad:
        server.publish_raw(topics.GALLERY_CHANGE, payload)
    server.publish_raw(topics.sync_reply(STATION), b'{"schema":"sync_reply/1","latest_version":-1}')
    server.broadcast(upsert(1, "alice"))
    assert station.wait_for(lambda g: g.version == 1)
    assert station.sync.stats.bad_payloads == len(bad) + 1
    assert station.sync.holder.gallery.identities == ("alice",)


def event(station: str = STATION, n: int = 0) -> EntryEvent:
    return EntryEvent(station_id=station, decision=Decision.GRANTED, worker_id="alice", reason=f"test {n}")


def test_the_outbox_drains_every_event(server: ServerSide, station: Station) -> None:
    station.sync.start()
    assert station.sync.link.wait_connected(10)
    sent = [event(n=i) for i in range(40)]
    for e in sent:
        station.sync.enqueue(e)
    ids = {e.event_id for e in sent}
    assert server.wait(lambda: ids <= {e.event_id for e in server.entries})
    deadline = time.monotonic() + 10
    while station.store.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert station.store.depth() == 0
    received = [e for e in server.entries if e.event_id in ids]
    assert {e.event_id: e for e in received} == {e.event_id: e for e in sent}  # same content, at least once
    assert station.sync.outbox.delivered == 40


def test_events_queued_while_the_broker_is_down_arrive_after_restart(
    mosquitto: Mosquitto, server: ServerSide, station: Station
) -> None:
    server.add(upsert(1, "alice"))
    station.sync.start()
    assert station.wait_for(lambda g: g.version == 1)
    before = [event(n=i) for i in range(5)]
    for e in before:
        station.sync.enqueue(e)
    assert server.wait(lambda: {e.event_id for e in before} <= {e.event_id for e in server.entries})

    mosquitto.stop()
    deadline = time.monotonic() + 10
    while station.sync.link.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not station.sync.link.connected
    during = [event(n=100 + i) for i in range(25)]
    for e in during:
        station.sync.enqueue(e)  # committed to SQLite, the broker is away
    assert station.store.depth() == 25
    n_requests = len(server.requests)

    mosquitto.restart()
    assert station.sync.link.wait_connected(30)
    assert server.link.wait_connected(30)
    ids = {e.event_id for e in during}
    assert server.wait(lambda: ids <= {e.event_id for e in server.entries}, timeout=30)
    deadline = time.monotonic() + 10
    while station.store.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert station.store.depth() == 0
    assert server.wait(lambda: len(server.requests) > n_requests)  # asked again for changes after reconnecting
    assert server.requests[-1].since_version == 1


def test_a_clean_stop_says_offline(mosquitto: Mosquitto, server: ServerSide, tmp_path: Path) -> None:
    st = Station(settings_for(mosquitto, tmp_path / "e", station="st-clean"))
    st.sync.start()
    assert server.wait(lambda: any(s.station_id == "st-clean" and s.online for s in server.statuses))
    st.close()
    assert server.wait(lambda: server.statuses[-1].station_id == "st-clean" and not server.statuses[-1].online)


STATION_PROCESS = """
import sys, time
from edge.config import EdgeSettings
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
s = EdgeSettings.build(station_id="st-killed", data_dir=sys.argv[1], mqtt={"host": "127.0.0.1", "port": int(sys.argv[2])})
store = EdgeStore.open(s.data_dir)
sync = StationSync(s, store, build_link(s))
sync.start()
assert sync.link.wait_connected(10)
print("connected", flush=True)
time.sleep(60)
"""


def test_a_killed_station_is_marked_offline_by_its_last_will(mosquitto: Mosquitto, server: ServerSide, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STATION_PROCESS, str(tmp_path / "k"), str(mosquitto.port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected", proc.stderr.read() if proc.stderr else ""
        assert server.wait(lambda: any(s.station_id == "st-killed" and s.online for s in server.statuses))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert server.wait(lambda: server.statuses[-1].station_id == "st-killed" and not server.statuses[-1].online)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
    # Retained: a server that subscribes later still sees the station as offline.
    with ServerSide(mosquitto.host, mosquitto.port) as late:
        assert late.wait(lambda: any(s.station_id == "st-killed" for s in late.statuses))
        assert not [s for s in late.statuses if s.station_id == "st-killed"][-1].online


# -- heartbeat, clock offset, validity windows, access lists, outbox budget (sync issue) ---------------------


def _station(mosquitto: Mosquitto, folder: Path, **kwargs) -> Station:  # noqa: ANN003
    st = Station(settings_for(mosquitto, folder))
    st.sync = StationSync(st.sync.settings, st.store, build_link(st.sync.settings),
                          on_gallery=lambda g, names: st.galleries.append((g.version, g.identities)), **kwargs)
    return st


def test_the_heartbeat_reports_the_station_state(mosquitto: Mosquitto, server: ServerSide, tmp_path: Path) -> None:
    states = {"camera": "ok", "door": "locked"}
    st = _station(mosquitto, tmp_path / "hb", status=StatusConfig(heartbeat_s=1.0), health=lambda: states)
    server.auto_answer = False
    try:
        st.sync.start()
        assert server.wait(lambda: len(server.requests) >= 1)
        # The server's clock is 30 s behind the station's: the station estimates its offset from the reply.
        request = server.requests[-1]
        reply = SyncReply(request_id=request.request_id, latest_version=0,
                          server_time=datetime.now(timezone.utc) - timedelta(seconds=30))
        server.publish_raw(topics.sync_reply(STATION), encode(reply))
        assert server.wait(lambda: any(a.station_id == STATION for a in server.acks))
        states["door"] = "unlocked"
        assert server.wait(lambda: len([s for s in server.statuses if s.uptime_s and s.door == "unlocked"]) >= 2,
                           timeout=10)
    finally:
        st.close()
    beats = [s for s in server.statuses if s.schema_ == "status/2"]
    last = beats[-1]
    assert last.online and last.camera == "ok" and last.door == "unlocked"
    assert 29.0 < (last.clock_offset_s or 0) < 31.0
    assert last.uptime_s is not None and last.uptime_s > beats[0].uptime_s  # type: ignore[operator]
    assert last.outbox_limit_bytes == OutboxConfig().max_bytes and last.outbox_alarm is False
    assert (last.outbox_bytes, last.outbox_depth, last.outbox_refused) == (0, 0, 0)
    assert last.agent_version and last.gallery_version == 0


def test_a_validity_window_opens_and_closes_on_time(mosquitto: Mosquitto, server: ServerSide, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    leaving = upsert(1, "leaving").model_copy(update={"valid_until": now + timedelta(seconds=2)})
    coming = upsert(2, "coming").model_copy(update={"valid_from": now + timedelta(seconds=3)})
    expired = upsert(3, "expired").model_copy(update={"valid_until": now - timedelta(days=1)})
    server.add(leaving, coming, expired, upsert(4, "always"))
    st = _station(mosquitto, tmp_path / "window")
    try:
        st.sync.start()
        assert st.wait_for(lambda g: g.version == 4)
        assert sorted(st.sync.holder.gallery.identities) == ["always", "leaving"]
        assert st.wait_for(lambda g: "leaving" not in g.identities, timeout=5)
        assert time_left(now + timedelta(seconds=2)) <= 0.05  # not before its end
        assert st.wait_for(lambda g: "coming" in g.identities, timeout=5)
        assert time_left(now + timedelta(seconds=3)) <= 0.05
        assert sorted(st.sync.holder.gallery.identities) == ["always", "coming"]
        assert st.store.worker("expired")["encodings"] == 1  # kept (a new window may come), never granted
    finally:
        st.close()


def time_left(deadline: datetime) -> float:
    return (deadline - datetime.now(timezone.utc)).total_seconds()


def test_a_worker_limited_to_other_stations_leaves_no_face_data_here(server: ServerSide, station: Station) -> None:
    elsewhere = upsert(1, "elsewhere").model_copy(update={"stations": ("st-other", "st-third")})
    server.add(elsewhere, upsert(2, "local").model_copy(update={"stations": (STATION,)}))
    station.sync.start()
    assert station.wait_for(lambda g: g.version == 2)
    assert station.sync.holder.gallery.identities == ("local",)
    row = station.store.worker("elsewhere")
    assert row is not None and row["encodings"] == 0 and not row["allowed"]
    # Added to this station's list later: the full encodings arrive with that change.
    server.broadcast(upsert(3, "elsewhere").model_copy(update={"stations": ("st-other", STATION)}))
    assert station.wait_for(lambda g: "elsewhere" in g.identities)
    assert station.store.worker("elsewhere")["encodings"] == 1


def test_a_full_outbox_alarms_logs_and_never_drops_silently(
    mosquitto: Mosquitto, server: ServerSide, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = OutboxConfig(max_mb=1.0, warn_fraction=0.8)
    st = _station(mosquitto, tmp_path / "full", outbox=budget)
    try:
        # The broker is unreachable for this station (not started): everything queues.
        size = len(encode(event())) + len(topics.entry(STATION)) + OUTBOX_ROW_OVERHEAD
        prefill = int(budget.max_bytes * 0.75) // size
        st.store.enqueue_many([event(n=i) for i in range(prefill)])
        assert not st.sync.heartbeat().outbox_alarm
        queued: list[EntryEvent] = []
        refused: list[EntryEvent] = []
        with caplog.at_level("WARNING", logger="edge.sync"):
            while len(refused) < 3:
                e = event(n=prefill + len(queued) + len(refused))
                (queued if st.sync.enqueue(e) else refused).append(e)
        alarms = [r for r in caplog.records if r.getMessage().startswith("outbox alarm")]
        assert len(alarms) == 1 and alarms[0].levelname == "WARNING"  # once, not per event
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 3
        for e, record in zip(refused, errors):  # each refused event is in the log in full
            assert str(e.event_id) in record.getMessage() and "NOT queued" in record.getMessage()
        beat = st.sync.heartbeat()
        assert beat.outbox_alarm and beat.outbox_refused == 3
        assert beat.outbox_bytes is not None and budget.max_bytes - size < beat.outbox_bytes <= budget.max_bytes
        assert beat.outbox_depth == prefill + len(queued)

        st.sync.start()  # the broker comes within reach: every queued event is delivered
        assert server.wait(lambda: len({x.event_id for x in server.entries}) >= prefill + len(queued), timeout=60)
        deadline = time.monotonic() + 20
        while st.store.depth() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert st.store.depth() == 0
        received = {x.event_id for x in server.entries}
        assert {e.event_id for e in queued} <= received and not {e.event_id for e in refused} & received
        assert st.sync.enqueue(event(n=999_999))  # room again
        assert not st.sync.heartbeat().outbox_alarm
    finally:
        st.close()


def test_an_edge_database_of_schema_1_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    folder = tmp_path / "old"
    folder.mkdir()
    con = sqlite3.connect(folder / "edge.db")
    con.executescript(
        """
        CREATE TABLE workers (worker_id VARCHAR(64) PRIMARY KEY, display_name VARCHAR(200) NOT NULL,
                              active BOOLEAN NOT NULL, deleted BOOLEAN NOT NULL, version BIGINT NOT NULL);
        CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(200) NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1'), ('gallery_version', '5');
        INSERT INTO workers VALUES ('alice', 'Alice', 1, 0, 5);
        """
    )
    con.commit()
    con.close()
    store = EdgeStore.open(folder)
    try:
        assert store.gallery_version() == 5
        row = store.worker("alice")
        assert row is not None and row["allowed"] and row["valid_from"] is None and row["valid_until"] is None
        store.apply_changes([upsert(6, "alice")], snapshot=False, latest_version=6, station_id=STATION)
        assert store.load_gallery().identities == ("alice",)
    finally:
        store.close()
