"""How long usage_summary takes on a filled database, for the ranges the dashboard asks for.

    pg_virtualenv -t -v 15 bash -c 'createdb usage && \
        U="postgresql+psycopg:///usage?host=$PGHOST&port=$PGPORT&user=$PGUSER&password=$PGPASSWORD" && \
        .venv/bin/python -m bench admin --database-url "$U" && .venv/bin/python -m tests.support.usage_timing "$U"'

Times the last 30 and 365 days before ``--end`` (bench/admin.py's END), as the
benchmark asks (UTC midnights) and as the dashboard asks (Shanghai
midnights), for all stations and for the busiest one; prints the median of
``--runs`` runs each and one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from server.db import make_engine, make_sessionmaker
from server.tables import USAGE_COUNTS
from server.usage import usage_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="SQLAlchemy URL of a filled database")
    parser.add_argument("--end", default="2026-11-01", help="the day after the last day (bench/admin.py END)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engine = make_engine(args.url)
    sessions = make_sessionmaker(engine)
    end = datetime.fromisoformat(args.end)
    with sessions() as session:
        busiest = session.execute(
            select(USAGE_COUNTS.c.station_id).where(USAGE_COUNTS.c.period == "month", USAGE_COUNTS.c.station_id != "")
            .group_by(USAGE_COUNTS.c.station_id).order_by(func.sum(USAGE_COUNTS.c.visits).desc()).limit(1)
        ).scalar_one()
    results: dict[str, float] = {}
    for zone_name in ("UTC", "Asia/Shanghai"):
        until = end.replace(tzinfo=timezone.utc if zone_name == "UTC" else ZoneInfo(zone_name))
        for days in (30, 365):
            for station in (None, busiest):
                times, summary = [], None
                for _ in range(args.runs):
                    with sessions() as session:
                        started = time.perf_counter()
                        summary = usage_summary(session, until - timedelta(days=days), until, station_id=station)
                        times.append((time.perf_counter() - started) * 1000)
                key = f"{days}d_{'utc' if zone_name == 'UTC' else 'shanghai'}_{'one_station' if station else 'all'}"
                results[key] = round(statistics.median(times), 1)
                assert summary is not None
                print(f"{key:28s} median {results[key]:7.1f} ms  runs {[round(t) for t in times]}  "
                      f"visits {summary.visits}  unique workers {summary.unique_workers}", flush=True)
    engine.dispose()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
