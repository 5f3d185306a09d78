"""Admin app benchmark: the entry log, the dashboard and the CSV export on 1,000,000 entries in PostgreSQL.

    python -m bench admin [--database-url URL] [--entries N] [--stations N] [--workers N] [--quick]
    (./run bench admin). PostgreSQL: --database-url, else the server the PG* variables describe
    (pg_virtualenv sets them), else the benchmark re-runs itself under ``pg_virtualenv -t``.

Fill: a fresh database (created on the server the PG* variables describe, or
the empty one given by --database-url) is migrated, then filled with COPY:
300 stations, 20,000 workers with categories, and 1,000,000 entries over a
year. Entries follow a day/night profile per category (sanitation at dawn,
couriers and riders at meal times, designated drivers at night), stations
have a long-tailed popularity, 85% are granted; row ids grow with time, as
ingest stores them. Then VACUUM ANALYZE, as autovacuum would have done.

Measured:

- entries_page_p95_ms: 20 random filter combinations (station, worker,
  category, decision, kind, time range, alone and combined) x 5 pages each
  (the first, then following the cursor), 50 rows a page, through
  server.entrylog.entry_log_page (the query, plus turning rows into objects).
- dashboard_ms: server.usage.usage_summary (the dashboard's one query function)
  over the last year, median of 3 runs; also printed: the last 30 days.
- export_peak_rss_mb: a subprocess exports every row as CSV
  (server.export.export_csv) and samples its RSS; the RSS after 100k rows and at
  the end are printed too, to show the memory stays flat.

The last line printed is one JSON object with entries_page_p95_ms,
dashboard_ms and export_peak_rss_mb (and details).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from bench.pg import new_pg_database, postgres_admin_url
from models.messages import Decision, EventKind
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.entrylog import EntryFilter, entry_log_page

log = logging.getLogger("bench.admin")
REPO = Path(__file__).resolve().parents[1]
TARGETS = {"entries_page_p95_ms": 200.0, "dashboard_ms": 500.0}
_IN_PG_ENV = "WAYSTATION_BENCH_ADMIN_UNDER_PG_VIRTUALENV"
END = datetime(2026, 11, 1, tzinfo=timezone.utc)
CATEGORIES = ("courier", "food_delivery", "sanitation", "designated_driver", "other")
CATEGORY_SHARE = (0.35, 0.35, 0.15, 0.10, 0.05)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红春梅海燕玉兰建华文军斌鹏宇浩然子涵欣怡"
CITIES = ("北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆", "乌鲁木齐", "喀什")


def hour_profile(category: str) -> np.ndarray:
    """Relative visits per hour of the day (station local time) for a category."""
    h = np.arange(24)
    bump = lambda centre, width, height: height * np.exp(-0.5 * ((h - centre) / width) ** 2)  # noqa: E731
    base = np.full(24, 0.15)
    if category == "sanitation":
        base += bump(5, 1.5, 3) + bump(13, 1.5, 1.5)
    elif category == "designated_driver":
        base += bump(23, 2, 3) + bump(1.5, 1.5, 2)
    else:  # couriers, riders, others: meal times and the afternoon
        base += bump(11.5, 1.2, 2.5) + bump(18, 1.5, 2.5) + bump(15, 2, 1)
    return base / base.sum()


# -- fill ----------------------------------------------------------------------------------------


def fill(url: str, *, entries: int, stations: int, workers: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    engine = make_engine(url)
    upgrade_database(engine)
    started = time.perf_counter()
    station_ids = [f"st-{i:04d}" for i in range(stations)]
    zones = ["Asia/Urumqi" if i % 25 == 7 else "Asia/Shanghai" for i in range(stations)]
    worker_ids = [uuid.UUID(int=int(x)).hex for x in rng.integers(1, 2**63, size=workers)]
    categories = rng.choice(len(CATEGORIES), size=workers, p=CATEGORY_SHARE)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            with cur.copy("COPY stations (station_id, name, created_at, online, gallery_version_acked, agent_version, "
                          "outbox_depth, time_zone, opening_hours, mode, place) FROM STDIN") as copy:
                for i, sid in enumerate(station_ids):
                    name = f"{CITIES[i % len(CITIES)]}{i + 1}号驿站"
                    copy.write_row((sid, name, END - timedelta(days=400), i % 9 != 0,
                                    0, "1.0", 0, zones[i], "24h", "face_or_qr", ""))
            columns = "worker_id, name, status, created_at, updated_at, category"
            with cur.copy(f"COPY workers ({columns}) FROM STDIN") as copy:
                for i, wid in enumerate(worker_ids):
                    name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)] + GIVEN[(i * 13 + 5) % len(GIVEN)]
                    copy.write_row((wid, name, "active", END - timedelta(days=400), END - timedelta(days=400),
                                    CATEGORIES[categories[i]]))
            _copy_entries(cur, rng, entries, station_ids, zones, worker_ids, categories)
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    took = time.perf_counter() - started
    print(f"filled {entries:,} entries, {stations} stations, {workers:,} workers in {took:.0f} s", flush=True)


def _copy_entries(cur, rng, n, station_ids, zones, worker_ids, categories) -> None:  # noqa: ANN001
    # Each worker uses a few stations near them; stations' popularity is long-tailed.
    popularity = 1.0 / np.arange(1, len(station_ids) + 1) ** 0.8
    popularity /= popularity.sum()
    home = rng.choice(len(station_ids), size=(len(worker_ids), 3), p=popularity)
    activity = rng.pareto(1.5, size=len(worker_ids)) + 0.2
    activity /= activity.sum()
    who = rng.choice(len(worker_ids), size=n, p=activity)
    station = home[who, rng.choice(3, size=n, p=(0.7, 0.2, 0.1))]
    # Day within the year (busier lately: more workers enrolled), then the hour from the category's profile.
    day = np.floor(365 * np.sqrt(rng.random(n))).astype(np.int64)
    hours = np.empty(n, dtype=np.int64)
    for c, name in enumerate(CATEGORIES):
        mask = categories[who] == c
        hours[mask] = rng.choice(24, size=int(mask.sum()), p=hour_profile(name))
    local_offset_h = np.where(np.array(zones)[station] == "Asia/Urumqi", 6, 8)
    seconds = (day * 86400 + (hours - local_offset_h) * 3600 + rng.integers(0, 3600, size=n)).astype(np.int64)
    start = END - timedelta(days=365)
    order = np.argsort(seconds, kind="stable")  # ids grow with time, as ingest stores them
    decision = rng.choice(3, size=n, p=(0.85, 0.13, 0.02))
    kind = rng.choice(6, size=n, p=(0.86, 0.10, 0.02, 0.005, 0.012, 0.003))
    distance = np.where(decision == 0, rng.normal(0.38, 0.05, n), rng.uniform(0.55, 0.95, n)).clip(0.05, 1.5)
    kinds = [k.value for k in (EventKind.FACE, EventKind.QR, EventKind.EXIT_REQUEST, EventKind.FORCED_OPEN,
                                EventKind.HELD_OPEN, EventKind.TAMPER)]
    decisions = [Decision.GRANTED.value, Decision.DENIED.value, Decision.SPOOF.value]
    reasons = {0: "matched", 1: "unknown face", 2: "liveness failed: no blink"}
    known_denied = rng.random(n) < 0.3
    decision_ms = rng.gamma(6.0, 70.0, n).round(1)
    event_ids = rng.bytes(16 * n)
    delay = rng.exponential(2.0, n) + np.where(rng.random(n) < 0.01, rng.exponential(7200, n), 0)
    columns = ("event_id, station_id, worker_id, kind, decision, reason, distance, second_distance, frames, face_px, "
               "decision_ms, gallery_version, occurred_at, received_at")
    with cur.copy(f"COPY entries ({columns}) FROM STDIN") as copy:
        for i in order:
            d = int(decision[i])
            at = start + timedelta(seconds=int(seconds[i]))
            worker = worker_ids[who[i]] if d == 0 or known_denied[i] else None
            copy.write_row((
                str(uuid.UUID(bytes=event_ids[16 * i:16 * i + 16], version=4)),
                station_ids[station[i]], worker, kinds[kind[i]], decisions[d], reasons[d],
                round(float(distance[i]), 3), round(float(distance[i]) + 0.25, 3), 3 + int(i % 4),
                90 + int(i % 130), float(decision_ms[i]), 1000 + int(i % 50), at,
                at + timedelta(seconds=float(delay[i])),
            ))


# -- measure -------------------------------------------------------------------------------------


def random_filters(rng: random.Random, engine: sa.Engine, count: int) -> list[EntryFilter]:
    with engine.connect() as conn:
        stations = [r[0] for r in conn.exec_driver_sql("SELECT station_id FROM stations ORDER BY station_id")]
        workers = [r[0] for r in conn.exec_driver_sql(
            "SELECT worker_id FROM entries WHERE worker_id IS NOT NULL ORDER BY id DESC LIMIT 5000")]
    def month() -> tuple[datetime, datetime]:
        since = END - timedelta(days=rng.randint(20, 360))
        return since, since + timedelta(days=rng.choice((1, 7, 30)))
    makers = [
        lambda: EntryFilter(station_id=rng.choice(stations)),
        lambda: EntryFilter(station_id=rng.choice(stations), decision=rng.choice([Decision.DENIED, Decision.SPOOF])),
        lambda: EntryFilter(worker_id=rng.choice(workers)),
        lambda: EntryFilter(category=rng.choice(CATEGORIES)),
        lambda: EntryFilter(category=rng.choice(CATEGORIES), decision=Decision.DENIED),
        lambda: EntryFilter(decision=rng.choice(list(Decision))),
        lambda: EntryFilter(kind=rng.choice([EventKind.QR, EventKind.HELD_OPEN, EventKind.TAMPER])),
        lambda: EntryFilter(since=(m := month())[0], until=m[1]),
        lambda: EntryFilter(station_id=rng.choice(stations), since=(m := month())[0], until=m[1]),
        lambda: EntryFilter(category=rng.choice(CATEGORIES), station_id=rng.choice(stations)),
        lambda: EntryFilter(decision=Decision.DENIED, since=(m := month())[0], until=m[1]),
        lambda: EntryFilter(station_id=rng.choice(stations), kind=EventKind.QR, decision=Decision.GRANTED),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def measure_pages(engine: sa.Engine, *, combos: int, pages: int, seed: int) -> dict[str, object]:
    sessions = make_sessionmaker(engine)
    filters = random_filters(random.Random(seed), engine, combos)
    with sessions() as session:  # one unfiltered page first: connection set-up and statement compilation
        entry_log_page(session=session, limit=50)
    times: list[float] = []
    worst: tuple[float, dict[str, str]] = (0.0, {})
    for f in filters:
        cursor = None
        for _ in range(pages):
            with sessions() as session:
                t = time.perf_counter()
                page = entry_log_page(session=session, filters=f, limit=50, cursor=cursor)
                ms = (time.perf_counter() - t) * 1000
            times.append(ms)
            worst = max(worst, (ms, f.as_dict()), key=lambda w: w[0])
            cursor = page.next_cursor
            if cursor is None:
                break
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    return {"pages": len(times), "p50_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1),
            "max_ms": round(times[-1], 1), "worst": worst[1]}


# Combinations that match very few rows without a station, worker or time range to narrow them: the
# query walks the (occurred_at, id) index until it has a page. Not part of the p95; printed for honesty.
RARE = (
    EntryFilter(kind=EventKind.TAMPER, category="other"),
    EntryFilter(decision=Decision.SPOOF, category="designated_driver"),
    EntryFilter(kind=EventKind.FORCED_OPEN, decision=Decision.GRANTED),
)


def measure_rare(engine: sa.Engine) -> dict[str, float]:
    sessions = make_sessionmaker(engine)
    out: dict[str, float] = {}
    for f in RARE:
        with sessions() as session:
            t = time.perf_counter()
            entry_log_page(session=session, filters=f, limit=50)
            out[",".join(f"{k}={v}" for k, v in f.as_dict().items())] = round((time.perf_counter() - t) * 1000, 1)
    return out


def measure_dashboard(engine: sa.Engine, runs: int = 3, days: int = 365) -> dict[str, object]:
    """server.usage.usage_summary over the last ``days``: the median of ``runs`` (the first is printed too)."""
    from server.usage import usage_summary

    sessions = make_sessionmaker(engine)
    since, until = END - timedelta(days=days), END
    timings = []
    for _ in range(runs):
        with sessions() as session:
            t = time.perf_counter()
            summary = usage_summary(session, since, until)
            timings.append((time.perf_counter() - t) * 1000)
    visits = sum(getattr(summary, "visits_by_hour", ()) or ())
    return {"runs_ms": [round(x, 1) for x in timings], "ms": round(statistics.median(timings), 1), "visits": visits}


_EXPORT_PROBE = r"""
import json, sys, time, psutil
from server.db import make_engine
from server.entrylog import EntryFilter
from server.export import export_csv
engine = make_engine(sys.argv[1])
proc = psutil.Process()
base = proc.memory_info().rss
lines, peak, at_100k, size = -1, base, None, 0
t = time.perf_counter()
for chunk in export_csv(engine, EntryFilter(), batch_size=2000):
    lines += chunk.count("\r\n")
    size += len(chunk.encode("utf-8"))
    rss = proc.memory_info().rss
    peak = max(peak, rss)
    if at_100k is None and lines >= 100_000:
        at_100k = rss
print(json.dumps({"rows": lines, "seconds": time.perf_counter() - t, "bytes": size, "base": base, "peak": peak,
                  "at_100k": at_100k, "end": proc.memory_info().rss}))
"""


def measure_export(url: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _EXPORT_PROBE, url], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the export subprocess failed: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    mb = 1024 * 1024
    return {"rows": r["rows"], "seconds": round(r["seconds"], 1), "rows_per_s": round(r["rows"] / r["seconds"]),
            "csv_mb": round(r["bytes"] / mb, 1), "rss_start_mb": round(r["base"] / mb, 1),
            "rss_at_100k_mb": round((r["at_100k"] or r["peak"]) / mb, 1), "rss_end_mb": round(r["end"] / mb, 1),
            "peak_rss_mb": round(r["peak"] / mb, 1)}


# -- main ----------------------------------------------------------------------------------------


def _relay(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd``, passing its output through but keeping the result line for last:
    pg_virtualenv prints "Dropping cluster ..." after the benchmark ends."""
    result = None
    with subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith('{"entries_page_p95_ms"'):
                result = line
            else:
                print(line, end="", flush=True)
    if result is not None:
        print(result, end="", flush=True)
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a new one on the PG* server)")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--stations", type=int, default=300)
    parser.add_argument("--workers", type=int, default=20_000)
    parser.add_argument("--combos", type=int, default=20, help="random filter combinations")
    parser.add_argument("--pages", type=int, default=5, help="pages followed per combination")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100,000 entries: a smoke run (figures not comparable)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.entries, args.stations, args.workers = 100_000, 60, 3000
    admin = postgres_admin_url()
    if args.database_url is None and admin is None:
        if shutil.which("pg_virtualenv") and not os.environ.get(_IN_PG_ENV):
            # A throwaway Debian cluster for this run (as .ci/run does for the tests).
            print("bench admin: starting a throwaway PostgreSQL cluster (pg_virtualenv) ...", file=sys.stderr)
            cmd = ["pg_virtualenv", "-t", sys.executable, "-m", "bench", "admin", *argv]
            return _relay(cmd, env={**os.environ, _IN_PG_ENV: "1"})
        print("bench admin: no PostgreSQL: give --database-url, set PG* variables, or install postgresql-common "
              "(pg_virtualenv)", file=sys.stderr)
        return 2
    url = args.database_url or new_pg_database(admin, "bench_admin")  # type: ignore[arg-type]
    try:
        result = run(url, args)
    finally:
        if args.database_url is None:  # ours: drop it (about 400 MB for a million entries)
            engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
            engine.dispose()
    print(json.dumps(result))
    return 0


def run(url: str, args: argparse.Namespace) -> dict[str, object]:
    fill(url, entries=args.entries, stations=args.stations, workers=args.workers, seed=args.seed)
    engine = make_engine(url)
    try:
        pages = measure_pages(engine, combos=args.combos, pages=args.pages, seed=args.seed)
        print(f"entry-log pages: {json.dumps(pages, ensure_ascii=False)}", flush=True)
        rare = measure_rare(engine)
        print(f"rare filter combinations, first page (not in the p95): {json.dumps(rare)}", flush=True)
        dashboard = measure_dashboard(engine)
        print(f"dashboard, a year: {json.dumps(dashboard)}", flush=True)
        month = measure_dashboard(engine, days=30)
        print(f"dashboard, 30 days: {json.dumps(month)}", flush=True)
    finally:
        engine.dispose()
    export = measure_export(url)
    print(f"export: {json.dumps(export)}", flush=True)
    return {
        "entries_page_p95_ms": pages["p95_ms"],
        "dashboard_ms": dashboard["ms"],
        "export_peak_rss_mb": export["peak_rss_mb"],
        "entries": args.entries,
        "entries_page_p50_ms": pages["p50_ms"],
        "dashboard_30d_ms": month["ms"],
        "entries_page_rare_max_ms": max(rare.values()),
        "export_rss_at_100k_mb": export["rss_at_100k_mb"],
        "export_rss_end_mb": export["rss_end_mb"],
        "export_rows_per_s": export["rows_per_s"],
        "targets_met": pages["p95_ms"] <= TARGETS["entries_page_p95_ms"] and dashboard["ms"] <= TARGETS["dashboard_ms"]
        and export["peak_rss_mb"] - export["rss_at_100k_mb"] < 10,
    }


if __name__ == "__main__":
    sys.exit(main())
