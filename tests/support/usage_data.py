"""Realistic entry logs for usage tests, screenshots and timing: stations, workers and visits.

``fill(engine, n_entries=..., days=..., stations=..., workers=...)`` registers
stations (Asia/Shanghai) and workers with categories, then inserts entries
spread over the days with a day/night profile per category (couriers and
designated drivers ride late). Entries go in with PostgreSQL's COPY or one
executemany on SQLite, so the database's own triggers count them as ingest does.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from server.tables import WORKER_CATEGORIES, Entry, Station, Worker

SHANGHAI = timezone(timedelta(hours=8))  # no DST: fixed offset is exact here
PLACES = (
    ("徐汇漕溪驿站", "徐汇区 漕溪北路 88 号"),
    ("浦东世纪大道驿站", "浦东新区 世纪大道 100 号"),
    ("静安南京西路驿站", "静安区 南京西路 1266 号"),
    ("虹桥枢纽驿站", "闵行区 申长路 688 号"),
    ("杨浦滨江驿站", "杨浦区 杨树浦路 2310 号"),
)
# Relative use per local hour of day, per category (index = hour 0..23).
_DAY = np.array([1, 1, 1, 1, 1, 2, 4, 6, 8, 8, 7, 9, 12, 10, 7, 6, 7, 9, 10, 8, 6, 4, 2, 1], float)
_NIGHT = np.array([6, 5, 4, 3, 2, 2, 3, 4, 4, 4, 4, 6, 8, 6, 4, 4, 5, 7, 9, 9, 8, 8, 8, 7], float)
PROFILES = {"courier": _NIGHT, "food_delivery": _DAY, "sanitation": np.roll(_DAY, -3),
            "designated_driver": np.roll(_NIGHT, 2), "other": _DAY}
OUTCOMES = (  # (kind, decision, known worker?, share)
    ("face", "granted", True, 0.80), ("qr", "granted", True, 0.09), ("face", "denied", True, 0.02),
    ("face", "denied", False, 0.04), ("face", "spoof", False, 0.005), ("exit_request", "granted", False, 0.04),
    ("held_open", "denied", False, 0.003), ("forced_open", "denied", False, 0.001), ("tamper", "denied", False, 0.001),
)


@dataclass(frozen=True)
class Filled:
    station_ids: list[str]
    worker_ids: list[str]
    since: datetime
    until: datetime
    n_entries: int


def add_stations_and_workers(
    session: Session, *, stations: int, workers: int, seed: int = 1
) -> tuple[list[str], list[str], list[str]]:
    """Register ``stations`` stations and ``workers`` workers; returns their ids and the workers' categories."""
    rng = np.random.default_rng(seed)
    station_ids = [f"ws-{i + 1:02d}" for i in range(stations)]
    for i, sid in enumerate(station_ids):
        name, place = PLACES[i % len(PLACES)]
        session.add(Station(station_id=sid, name=name if i < len(PLACES) else f"{name} {i + 1}", place=place,
                            time_zone="Asia/Shanghai", opening_hours="24h"))
    weights = np.array([0.35, 0.3, 0.15, 0.12, 0.08])
    cats = rng.choice(len(WORKER_CATEGORIES), size=workers, p=weights)
    worker_ids = [f"w{i:06d}" for i in range(workers)]
    for wid, c in zip(worker_ids, cats):
        session.add(Worker(worker_id=wid, name=f"Worker {wid}", category=WORKER_CATEGORIES[c]))
    session.commit()
    return station_ids, worker_ids, [WORKER_CATEGORIES[c] for c in cats]


def entry_rows(
    *, n: int, station_ids: list[str], worker_ids: list[str], categories: list[str], since: datetime, days: int,
    seed: int = 2,
) -> list[dict[str, object]]:
    """``n`` entries over ``days`` local days from ``since`` (a Shanghai midnight), as Entry column dicts."""
    rng = np.random.default_rng(seed)
    shares = np.array([o[3] for o in OUTCOMES])
    outcome = rng.choice(len(OUTCOMES), size=n, p=shares / shares.sum())
    worker = rng.integers(0, len(worker_ids), size=n)
    # Busier stations first: a Zipf-like share per station.
    station_w = 1.0 / np.arange(1, len(station_ids) + 1) ** 0.7
    station = rng.choice(len(station_ids), size=n, p=station_w / station_w.sum())
    day = rng.integers(0, days, size=n)
    hours = np.empty(n, dtype=np.int64)
    for cat, profile in PROFILES.items():
        mask = np.array([c == cat for c in categories])[worker]
        hours[mask] = rng.choice(24, size=int(mask.sum()), p=profile / profile.sum())
    seconds = rng.integers(0, 3600, size=n)
    base = since.timestamp()
    stamps = base + day * 86400 + hours * 3600 + seconds
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(n):
        kind, decision, known, _ = OUTCOMES[outcome[i]]
        rows.append({
            "event_id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)),
            "station_id": station_ids[station[i]],
            "worker_id": worker_ids[worker[i]] if known else None,
            "kind": kind, "decision": decision, "reason": "matched" if decision == "granted" else "",
            "distance": 0.4 if known else None, "gallery_version": 1,
            "occurred_at": datetime.fromtimestamp(float(stamps[i]), timezone.utc),
            "received_at": now,
        })
    return rows


def insert_entries(engine: Engine, rows: list[dict[str, object]]) -> None:
    """Insert entry rows in one statement (COPY on PostgreSQL), so the usage triggers run as on ingest."""
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            conn.execute(insert(Entry), rows)
        return
    columns = list(rows[0])
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join("\\N" if row[c] is None else str(row[c]) for c in columns) + "\n")
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            with cur.copy(f"COPY entries ({', '.join(columns)}) FROM STDIN") as copy:
                copy.write(buf.getvalue())
        raw.commit()
    finally:
        raw.close()


def fill(engine: Engine, *, n_entries: int, days: int = 30, stations: int = 5, workers: int = 400,
         end: datetime | None = None, seed: int = 1) -> Filled:
    """Stations, workers and ``n_entries`` entries over the ``days`` Shanghai days before ``end`` (today)."""
    end_local = (end or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
    until = end_local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    since = until - timedelta(days=days)
    with Session(engine) as session:
        station_ids, worker_ids, categories = add_stations_and_workers(
            session, stations=stations, workers=workers, seed=seed
        )
    chunk = 200_000
    for start in range(0, n_entries, chunk):
        rows = entry_rows(n=min(chunk, n_entries - start), station_ids=station_ids, worker_ids=worker_ids,
                          categories=categories, since=since, days=days, seed=seed + 1 + start)
        insert_entries(engine, rows)
    return Filled(station_ids, worker_ids, since.astimezone(timezone.utc), until.astimezone(timezone.utc), n_entries)
