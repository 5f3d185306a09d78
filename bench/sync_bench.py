"""Sync benchmarks: ingest into PostgreSQL and SQLite, a 10,000-worker snapshot, a deletion
reaching 50 stations, and 50,000 queued events drained after a reconnect.

    python -m bench sync [--quick] [--events N] [--workers N] [--stations N] [--deletions N] [--drain N]
    (./run bench sync; python -m bench.sync_bench runs the same)

Everything is real: Debian's mosquitto as a process (configured like
deploy/mosquitto/mosquitto.conf for in-flight and queue limits), the server's
Ingest and sync responder, stations' StationSync with their SQLite stores.
PostgreSQL: when no PG* variables point at a server, the benchmark re-runs
itself under ``pg_virtualenv -t -o fsync=on`` (a throwaway Debian cluster
with durable commits). The last line printed is one JSON object with the keys
ingest_events_per_s_postgres, ingest_events_per_s_sqlite, snapshot_10k_s,
deletion_p99_s and drain_events_per_s.

What is timed:

- ingest: N entries wait at the broker in the server's persistent session
  (published while it was stopped); the clock runs from the server's start to
  the last entry committed. Each entry is acknowledged after its commit.
  Measured with batches (``ingest_batch_max``) and, for comparison, one
  entry per transaction.
- snapshot: a station with an empty store connects; from ``start()`` to its
  matcher holding every worker (paged replies, one atomic apply).
- deletion: the server deletes a worker and broadcasts the change; per station,
  from the change's commit to the server recording that station's ack.
- drain: a station holding N queued events connects; from ``start()`` to its
  outbox being empty (every event acknowledged by the broker); the time until
  the server has stored them all is printed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from core.broker import free_port
from bench.pg import new_pg_database, postgres_admin_url
from core.mqtt import MqttLink, MqttSettings
from edge.config import EdgeSettings
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models import topics
from models.encoding import FACE_MODEL_ID
from models.messages import Decision, EntryEvent, encode
from server.config import ServerSettings
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.gallery import delete_worker
from server.ingest import Ingest
from server.stations import register_station
from server.tables import Entry, FaceSample, GalleryChangeRow, Station, Worker, utcnow

log = logging.getLogger("bench.sync")

TARGETS = {
    "ingest_events_per_s_postgres": (">=", 2000.0),
    "snapshot_10k_s": ("<=", 10.0),
    "deletion_p99_s": ("<=", 2.0),
    "drain_events_per_s": (">=", 1000.0),
}
_IN_PG_ENV = "WAYSTATION_BENCH_UNDER_PG_VIRTUALENV"


# -- infrastructure -------------------------------------------------------------------------------


class Broker:
    """Debian's mosquitto on a free loopback port, with the deploy config's limits."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise SystemExit("bench sync: Debian's mosquitto is needed (apt-get install mosquitto)")
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 200000\nmax_inflight_messages 200\nmax_packet_size 270000\n"
            f"log_type error\nlog_dest file {folder / 'mosquitto.log'}\n"
        )
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _port_open(self.port), 10, "mosquitto")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@contextmanager
def fresh_broker(folder: Path) -> Iterator[Broker]:
    """A broker per measurement: no retained status or session of the one before gets in the way."""
    folder.mkdir(parents=True, exist_ok=True)
    broker = Broker(folder)
    try:
        yield broker
    finally:
        broker.stop()


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench sync: timed out waiting for {what}")
        time.sleep(poll)


def server_settings(url: str, broker: Broker, **overrides: object) -> ServerSettings:
    values: dict[str, object] = {
        "api_token": "bench-token-0123456789", "database_url": url, "mqtt_port": broker.port,
        "mqtt_client_id": f"bench-server-{uuid.uuid4().hex[:6]}",
    }
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


def prepared_engine(url: str, stations: list[str]) -> sa.Engine:
    engine = make_engine(url)
    upgrade_database(engine)
    with make_sessionmaker(engine)() as session:
        for sid in stations:
            register_station(session=session, station_id=sid, name=sid)
    return engine


def publisher(broker: Broker) -> MqttLink:
    link = MqttLink(MqttSettings(port=broker.port, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}", clean_start=True))
    link.start()
    if not link.wait_connected(10):
        raise SystemExit("bench sync: cannot connect to mosquitto")
    return link


def publish_all(link: MqttLink, messages: list[tuple[str, bytes]]) -> None:
    """Publish QoS 1 with at most 1,000 unacknowledged; return when the broker has every one."""
    window = threading.BoundedSemaphore(1000)
    done = threading.Semaphore(0)

    def acked() -> None:
        window.release()
        done.release()

    for topic, payload in messages:
        window.acquire()
        if not link.publish(topic, payload, on_acked=acked):
            raise SystemExit("bench sync: publishing failed")
    for _ in messages:
        done.acquire(timeout=60)


# -- 1. ingest --------------------------------------------------------------------------------------


def bench_ingest(url: str, broker: Broker, events: int, batch_max: int, workers: int = 0) -> float:
    """Entries queued at the broker for a stopped server, stored once it starts: events per second.

    ``workers`` 0: the Ingest runs in this process, timed from its start. ``workers`` N >= 1: N ingest
    processes (MQTT 5; a shared subscription when N > 1), timed from their launch, Python start included.
    """
    station = "bench-ingest"
    engine = prepared_engine(url, [station])
    shared: dict[str, object] = {"mqtt_protocol": "5"} if workers >= 1 else {}
    if workers > 1:
        shared["mqtt_shared_group"] = "ingest"
    settings = [
        server_settings(url, broker, ingest_batch_max=batch_max, mqtt_client_id=f"bench-ingest-{n}", **shared)
        for n in range(max(workers, 1))
    ]
    for s in settings:  # creates the persistent sessions and their subscriptions
        ingest = Ingest(s, engine)
        ingest.start()
        _wait(lambda: ingest.connected, 10, "the ingest to connect")
        time.sleep(0.3)
        ingest.stop()
    link = publisher(broker)
    wire = [
        (topics.entry(station), encode(EntryEvent(
            station_id=station, decision=Decision.GRANTED, worker_id=f"w{i % 500}", reason="matched",
            decision_ms=180.0, gallery_version=7,
        )))
        for i in range(events)
    ]
    publish_all(link, wire)
    link.stop()

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(Entry)).scalar_one())

    if workers == 0:
        ingest = Ingest(settings[0], engine)
        t0 = time.perf_counter()
        ingest.start()
        _wait(lambda: ingest.counters["stored"] >= events, 600, "the ingest", poll=0.01)
        elapsed = time.perf_counter() - t0
        ingest.stop()
    else:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, "-c", _INGEST_PROCESS, s.model_dump_json()], stdin=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parents[1])
            for s in settings
        ]
        _wait(lambda: count() >= events, 600, "the ingest processes", poll=0.02)
        elapsed = time.perf_counter() - t0
        for proc in procs:
            proc.communicate(b"", timeout=60)
    stored = count()
    engine.dispose()
    if stored != events:
        raise SystemExit(f"bench sync: {stored} entries stored, {events} expected")
    return events / elapsed


# One ingest worker as its own process: runs until its standard input closes.
_INGEST_PROCESS = """
import json, sys
from server.config import ServerSettings
from server.db import make_engine
from server.ingest import Ingest
values = json.loads(sys.argv[1])
values["api_token"] = "bench-token-0123456789"
values["mqtt_password"] = None
settings = ServerSettings(**values)
engine = make_engine(settings.resolved_database_url)
ingest = Ingest(settings, engine)
ingest.start()
sys.stdin.read()
ingest.stop()
engine.dispose()
"""


# -- 2. snapshot --------------------------------------------------------------------------------------


def fill_gallery(engine: sa.Engine, workers: int, encodings_each: int, seed: int = 1) -> None:
    """``workers`` enrolled workers with random encodings, written in bulk (enrolling one by one is not timed)."""
    rng = np.random.default_rng(seed)
    now = utcnow()
    ids = [uuid.uuid4().hex for _ in range(workers)]
    vectors = rng.normal(size=(workers * encodings_each, 128)).astype("<f4") * 0.05
    with engine.begin() as conn:
        conn.execute(sa.insert(Worker), [
            {"worker_id": w, "name": f"Worker {i}", "status": "active", "created_at": now, "updated_at": now}
            for i, w in enumerate(ids)
        ])
        conn.execute(sa.insert(FaceSample), [
            {"worker_id": ids[i // encodings_each], "model_id": FACE_MODEL_ID, "vector": vectors[i].tobytes(),
             "created_at": now}
            for i in range(len(vectors))
        ])
        conn.execute(sa.insert(GalleryChangeRow), [{"op": "upsert", "worker_id": w, "created_at": now} for w in ids])


def edge_settings(station: str, folder: Path, broker: Broker) -> EdgeSettings:
    return EdgeSettings.build(station_id=station, data_dir=folder,
                              mqtt={"host": "127.0.0.1", "port": broker.port, "client_id": f"station-{station}"})


def bench_snapshot(folder: Path, broker: Broker, workers: int, encodings_each: int) -> float:
    url = f"sqlite:///{folder / 'snapshot' / 'server.db'}"
    engine = prepared_engine(url, ["fresh"])
    fill_gallery(engine, workers, encodings_each)
    ingest = Ingest(server_settings(url, broker), engine)
    ingest.start()
    _wait(lambda: ingest.connected, 10, "the server")
    time.sleep(0.3)
    settings = edge_settings("fresh", folder / "fresh-station", broker)
    store = EdgeStore.open(settings.data_dir)
    sync = StationSync(settings, store, build_link(settings))
    t0 = time.perf_counter()
    sync.start()
    if not sync.holder.wait_for(lambda g: len(g.identities) >= workers, 120):
        raise SystemExit("bench sync: the snapshot did not arrive")
    elapsed = time.perf_counter() - t0
    sync.stop()
    store.close()
    ingest.stop()
    engine.dispose()
    return elapsed


# -- 3. deletion to many stations ------------------------------------------------------------------------


def bench_deletion(folder: Path, broker: Broker, stations: int, deletions: int) -> list[float]:
    """Seconds from each deletion's commit to each station's acknowledgement, as the server recorded them."""
    url = f"sqlite:///{folder / 'deletion' / 'server.db'}"
    names = [f"st-{i:03d}" for i in range(stations)]
    engine = prepared_engine(url, names)
    fill_gallery(engine, max(deletions, 50), 2, seed=2)
    ingest = Ingest(server_settings(url, broker), engine)
    ingest.start()
    _wait(lambda: ingest.connected, 10, "the server")
    time.sleep(0.3)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        latest = session.scalar(sa.select(sa.func.max(GalleryChangeRow.version)))
        victims = list(session.scalars(sa.select(Worker.worker_id).order_by(Worker.worker_id).limit(deletions)))
    fleet = []
    for name in names:
        settings = edge_settings(name, folder / "stations" / name, broker)
        store = EdgeStore.open(settings.data_dir)
        sync = StationSync(settings, store, build_link(settings))
        sync.start()
        fleet.append((sync, store))

    def acked_all(version: int) -> bool:
        with engine.connect() as conn:
            behind = conn.execute(
                sa.select(sa.func.count()).select_from(Station).where(Station.gallery_version_acked < version)
            ).scalar_one()
        return behind == 0

    _wait(lambda: acked_all(latest), 120, "every station to hold the gallery", poll=0.05)
    latencies: list[float] = []
    for worker_id in victims:
        with sessions() as session:
            change = delete_worker(session=session, worker_id=worker_id)
            committed = session.get(GalleryChangeRow, change.version).created_at  # type: ignore[union-attr]
        ingest.publish_change(change)
        _wait(lambda: acked_all(change.version), 30, "the deletion's acknowledgements", poll=0.01)
        with engine.connect() as conn:
            acked_at = conn.execute(sa.select(Station.gallery_acked_at)).scalars().all()
        latencies += [(a - committed).total_seconds() for a in acked_at]
    for sync, store in fleet:
        sync.stop(timeout=2.0)
        store.close()
    ingest.stop()
    engine.dispose()
    return latencies


# -- 4. drain after reconnect ------------------------------------------------------------------------------


def bench_drain(folder: Path, broker: Broker, events: int) -> tuple[float, float]:
    """(events per second until the outbox is empty, events per second until the server stored them all)."""
    station = "drainer"
    url = f"sqlite:///{folder / 'drain' / 'server.db'}"
    engine = prepared_engine(url, [station])
    ingest = Ingest(server_settings(url, broker), engine)
    ingest.start()
    _wait(lambda: ingest.connected, 10, "the server")
    settings = edge_settings(station, folder / "drain-station", broker)
    store = EdgeStore.open(settings.data_dir)
    batch = 5000
    for start in range(0, events, batch):  # queued while offline (not timed)
        store.enqueue_many([
            EntryEvent(station_id=station, decision=Decision.GRANTED, worker_id=f"w{i % 500}", reason="matched")
            for i in range(start, min(events, start + batch))
        ])
    sync = StationSync(settings, store, build_link(settings))
    t0 = time.perf_counter()
    sync.start()
    _wait(lambda: store.depth() == 0, 600, "the outbox to drain", poll=0.02)
    drained = time.perf_counter() - t0
    _wait(lambda: ingest.counters["stored"] >= events, 600, "the server to store the drained events", poll=0.02)
    stored = time.perf_counter() - t0
    sync.stop()
    store.close()
    ingest.stop()
    engine.dispose()
    return events / drained, events / stored


# -- main ---------------------------------------------------------------------------------------------------


def _rerun_under_pg_virtualenv(argv: list[str]) -> int | None:
    if os.environ.get(_IN_PG_ENV) or postgres_admin_url() is not None or shutil.which("pg_virtualenv") is None:
        return None
    env = {**os.environ, _IN_PG_ENV: "1"}
    cmd = ["pg_virtualenv", "-t", "-o", "fsync=on", sys.executable, "-m", "bench.sync_bench", *argv]
    print("bench sync: starting a throwaway PostgreSQL cluster (pg_virtualenv, fsync on) ...", file=sys.stderr)
    return subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parents[1]).returncode


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (figures not comparable)")
    parser.add_argument("--events", type=int, default=20_000, help="entries per ingest measurement")
    parser.add_argument("--workers", type=int, default=10_000, help="workers in the snapshot")
    parser.add_argument("--encodings", type=int, default=3, help="encodings per worker in the snapshot")
    parser.add_argument("--stations", type=int, default=50, help="simulated stations for the deletion")
    parser.add_argument("--deletions", type=int, default=20, help="deletions timed (each reaches every station)")
    parser.add_argument("--drain", type=int, default=50_000, help="queued events drained after reconnect")
    args = parser.parse_args(args_list)
    rerun = _rerun_under_pg_virtualenv(args_list)
    if rerun is not None:
        return rerun
    if args.quick:
        args.events, args.workers, args.stations, args.deletions, args.drain = 2000, 1000, 10, 5, 5000
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("core.mqtt").setLevel(logging.ERROR)  # connects and disconnects are not news here
    logging.getLogger("edge.sync").setLevel(logging.ERROR)

    folder = Path(tempfile.mkdtemp(prefix="waystation-sync-bench-"))
    results: dict[str, float | None] = {}
    try:
        admin = postgres_admin_url()
        if admin is None:
            print("PostgreSQL: none (no PG* variables and no pg_virtualenv): ingest on PostgreSQL not measured")
            results["ingest_events_per_s_postgres"] = None
        else:
            with fresh_broker(folder / "pg") as broker:
                rate = bench_ingest(new_pg_database(admin), broker, args.events, 200)
                single = bench_ingest(new_pg_database(admin), broker, max(args.events // 4, 500), 1)
                one_proc = bench_ingest(new_pg_database(admin), broker, args.events * 2, 200, workers=1)
                two_procs = bench_ingest(new_pg_database(admin), broker, args.events * 2, 200, workers=2)
            print(f"ingest PostgreSQL: {rate:,.0f} events/s in batches (ingest_batch_max 200); "
                  f"{single:,.0f} events/s one per transaction")
            print(f"  MQTT 5 worker processes (start-up included): 1 alone {one_proc:,.0f} events/s, 2 on a shared "
                  f"subscription {two_procs:,.0f} events/s")
            results["ingest_events_per_s_postgres"] = round(rate, 1)
        with fresh_broker(folder / "sqlite") as broker:
            rate = bench_ingest(f"sqlite:///{folder / 'ingest' / 'server.db'}", broker, args.events, 200)
            single = bench_ingest(f"sqlite:///{folder / 'ingest1' / 'server.db'}", broker,
                                  max(args.events // 4, 500), 1)
        print(f"ingest SQLite:     {rate:,.0f} events/s in batches; {single:,.0f} events/s one per transaction")
        results["ingest_events_per_s_sqlite"] = round(rate, 1)

        with fresh_broker(folder / "snapshot") as broker:
            snap = bench_snapshot(folder, broker, args.workers, args.encodings)
        print(f"snapshot: {args.workers:,} workers x {args.encodings} encodings to a fresh station in {snap:.2f} s")
        results["snapshot_10k_s"] = round(snap, 3)

        with fresh_broker(folder / "deletion") as broker:
            lat = bench_deletion(folder, broker, args.stations, args.deletions)
        p99 = float(np.percentile(lat, 99))
        print(f"deletion: {args.deletions} deletions x {args.stations} stations: median "
              f"{statistics.median(lat) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
        results["deletion_p99_s"] = round(p99, 3)

        with fresh_broker(folder / "drain") as broker:
            drained, stored = bench_drain(folder, broker, args.drain)
        print(f"drain: {args.drain:,} queued events: {drained:,.0f} events/s until the outbox was empty, "
              f"{stored:,.0f} events/s until the server had stored them all")
        results["drain_events_per_s"] = round(drained, 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for key, (op, target) in TARGETS.items():
        value = results.get(key)
        ok = value is not None and (value >= target if op == ">=" else value <= target)
        print(f"  {key}: {value} (target {op} {target:g}) {'OK' if ok else 'MISSED'}")
    print(f"measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPU(s)"
          + (" (--quick: not the issue's sizes)" if args.quick else ""))
    print(json.dumps({k: results.get(k) for k in ("ingest_events_per_s_postgres", "ingest_events_per_s_sqlite",
                                                  "snapshot_10k_s", "deletion_p99_s", "drain_events_per_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
