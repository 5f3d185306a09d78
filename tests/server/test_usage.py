"""Usage figures on SQLite and PostgreSQL, stored through the real ingest path: every figure equals a
count made directly from the events, for random ranges, stations and time zones (daylight saving
included); night is the station's night; unique workers, categories, refusals and the busiest stations."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, column, delete, insert, inspect
from sqlalchemy import table as sa_table
from sqlalchemy.orm import Session, sessionmaker

from models.messages import Decision, EntryEvent, EventKind
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.ingest_store import entry_row, store_events
from server.tables import USAGE_COUNT_COLUMNS, WORKER_CATEGORIES, Entry, Station, Worker
from server.usage import NIGHT_HOURS, OTHERS, RULES, UNCATEGORISED, usage_summary

SHANGHAI = ZoneInfo("Asia/Shanghai")
STATIONS = {
    "s1": ("北京东站", "Asia/Shanghai"), "s2": ("Urumqi stop", "Asia/Urumqi"), "s3": ("Berlin test", "Europe/Berlin"),
    "s4": ("三号站", "Asia/Shanghai"), "s5": ("New York test", "America/New_York"),
}
WORKERS = {"w1": "courier", "w2": "food_delivery", "w3": "sanitation", "w4": "designated_driver", "w5": "other",
           "w6": None, "w7": "courier"}
T0 = datetime(2025, 3, 20, tzinfo=timezone.utc)  # Berlin and New York change to summer time in the range


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    maker = make_sessionmaker(engine)
    with maker() as session:
        for sid, (name, tz) in STATIONS.items():
            session.add(Station(station_id=sid, name=name, time_zone=tz))
        for wid, category in WORKERS.items():
            session.add(Worker(worker_id=wid, name=wid.upper(), category=category))
        session.commit()
    return maker


def event(station: str, at: datetime, worker: str | None = "w1", decision: Decision = Decision.GRANTED,
          kind: EventKind = EventKind.FACE) -> EntryEvent:
    return EntryEvent(station_id=station, worker_id=worker, decision=decision, kind=kind, occurred_at=at)


def store(sessions: sessionmaker[Session], events: list[EntryEvent], batch: int = 50) -> None:
    """As ingest stores them: batches of events in one transaction each."""
    with sessions() as session:
        for i in range(0, len(events), batch):
            store_events(session=session, events=events[i:i + batch])


def random_events(n: int, seed: int) -> list[EntryEvent]:
    rng = random.Random(seed)
    kinds = [EventKind.FACE, EventKind.QR, EventKind.EXIT_REQUEST, EventKind.HELD_OPEN, EventKind.TAMPER]
    out = []
    for _ in range(n):
        decision = rng.choices(list(Decision), [0.75, 0.2, 0.05])[0]
        worker = rng.choice([*WORKERS, "gone"]) if decision is Decision.GRANTED or rng.random() < 0.3 else None
        at = T0 + timedelta(seconds=rng.randrange(0, 75 * 86400))
        out.append(event(rng.choice(list(STATIONS)), at, worker, decision, rng.choices(kinds, [70, 20, 5, 3, 2])[0]))
    return out


def counts_of(kind: EventKind, decision: Decision, worker: str | None, category: str | None) -> Counter[str]:
    """The documented rules (server/usage.py), written out here independently of the SQL."""
    out: Counter[str] = Counter()
    door = kind in (EventKind.FACE, EventKind.QR)
    if door and decision is Decision.GRANTED:
        out["visits"] += 1
        out["visits_qr"] += kind is EventKind.QR
        if category:
            out[f"cat_{category}"] += 1
    if door and decision is Decision.DENIED:
        out["denied" if worker else "unknown"] += 1
    out["spoof"] += decision is Decision.SPOOF
    out["exits"] += kind is EventKind.EXIT_REQUEST
    out["alarms"] += kind in (EventKind.FORCED_OPEN, EventKind.HELD_OPEN, EventKind.TAMPER)
    return +out


def expected(events: list[EntryEvent], since: datetime, until: datetime, station: str | None, tz: str,
             zones: dict[str, str]) -> dict:
    """The figures counted straight from the events, with zoneinfo for every local time."""
    totals: Counter[str] = Counter()
    by_hour, by_day, by_station, workers = [0] * 24, Counter(), Counter(), set()
    for e in events:
        if not since <= e.occurred_at < until or (station and e.station_id != station):
            continue
        counts = counts_of(e.kind, e.decision, e.worker_id, WORKERS.get(e.worker_id or ""))
        totals.update(counts)
        if counts.get("visits"):
            by_hour[e.occurred_at.astimezone(ZoneInfo(zones[e.station_id])).hour] += 1
            by_day[e.occurred_at.astimezone(ZoneInfo(tz)).date()] += 1
            by_station[e.station_id] += 1
            if e.worker_id:
                workers.add(e.worker_id)
    return {"totals": totals, "by_hour": by_hour, "by_day": by_day, "by_station": by_station, "workers": len(workers)}


@pytest.mark.parametrize("zones", [
    pytest.param({sid: tz for sid, (_n, tz) in STATIONS.items()}, id="with-daylight-saving"),
    pytest.param({"s1": "Asia/Shanghai", "s2": "Asia/Urumqi", "s3": "Asia/Tokyo", "s4": "Asia/Shanghai",
                  "s5": "America/Bogota"}, id="fixed-offsets"),
])
def test_every_figure_equals_a_direct_count_of_the_events(
    sessions: sessionmaker[Session], zones: dict[str, str],
) -> None:
    with sessions() as session:
        for sid, tz in zones.items():
            session.get_one(Station, sid).time_zone = tz
        session.commit()
    events = random_events(2500, seed=7) + [  # and some inside the ranges of less than an hour below
        event("s1", T0 + timedelta(days=5, minutes=m), "w2") for m in (20, 30, 55)]
    store(sessions, events)
    rng = random.Random(3)
    april, june = datetime(2025, 4, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, tzinfo=timezone.utc)
    ranges = [(T0, T0 + timedelta(days=40), None, "Asia/Shanghai"),  # whole UTC days only
              (april, june, None, "Asia/Shanghai"), (april, june, "s2", "Asia/Shanghai"),  # whole UTC months
              (datetime(2025, 4, 1, tzinfo=SHANGHAI), datetime(2025, 6, 1, tzinfo=SHANGHAI), None,
               "Asia/Shanghai"),  # Shanghai months: April in UTC, and days and hours around it
              (T0 - timedelta(hours=8), T0 + timedelta(days=12, hours=16), "s1", "Asia/Shanghai"),  # Shanghai days
              (T0 + timedelta(days=5, minutes=10), T0 + timedelta(days=5, minutes=50), None, "Asia/Shanghai"),
              (T0 + timedelta(days=5, minutes=10), T0 + timedelta(days=5, hours=1), None, "Asia/Shanghai"),
              (T0 + timedelta(days=3, minutes=10), T0 + timedelta(days=3, hours=7, minutes=5), None, "Europe/Berlin")]
    for _ in range(14):
        since = T0 + timedelta(seconds=rng.randrange(-86400, 30 * 86400), microseconds=rng.choice([0, 250_000]))
        until = since + timedelta(seconds=rng.randrange(1, 15 * 86400))
        station, tz = rng.choice([None, None, *STATIONS]), rng.choice(["Asia/Shanghai", "Europe/Berlin"])
        ranges.append((since, until, station, tz))
    for since, until, station, tz in ranges:
        for top in (len(STATIONS), 2):
            with sessions() as session:
                got = usage_summary(session, since, until, station_id=station, tz=tz, top_stations=top)
            want = expected(events, since, until, station, tz, zones)
            where = f"{since}..{until} at {station or 'all'} in {tz}, top {top}"
            assert list(got.visits_by_hour) == want["by_hour"], where
            assert {k: got.totals[k] for k in got.totals if got.totals[k]} == {
                k: v for k, v in want["totals"].items() if v}, where
            assert dict(zip(got.days, got.day_totals)) == {d: want["by_day"].get(d, 0) for d in got.days}, where
            assert set(want["by_day"]) <= set(got.days), where
            assert {s.station_id: s.visits for s in got.stations if s.visits} == dict(want["by_station"]), where
            assert got.unique_workers == want["workers"], where
            busiest = [s.station_id for s in got.stations[:top]]
            assert list(got.visits_by_day) in (busiest, [*busiest, OTHERS]), where
            for sid in busiest:
                assert sum(got.visits_by_day[sid]) == want["by_station"][sid], where


def test_a_visit_at_half_past_eleven_in_shanghai_is_night_although_it_is_afternoon_in_utc(
    sessions: sessionmaker[Session],
) -> None:
    late = datetime(2025, 4, 2, 23, 30, tzinfo=SHANGHAI)  # 15:30 UTC
    noon = datetime(2025, 4, 2, 12, 0, tzinfo=SHANGHAI)
    store(sessions, [event("s1", late), event("s1", noon, "w2"), event("s1", late + timedelta(minutes=20), "w3")])
    since = datetime(2025, 4, 1, tzinfo=SHANGHAI)
    with sessions() as session:
        s = usage_summary(session, since, since + timedelta(days=7))
    assert late.astimezone(timezone.utc).hour == 15
    assert s.visits_by_hour[23] == 2 and s.visits_by_hour[12] == 1 and s.visits_by_hour[15] == 0
    assert s.night_visits == 2 and s.night_share == pytest.approx(2 / 3)
    assert NIGHT_HOURS == frozenset((22, 23, 0, 1, 2, 3, 4, 5))
    # The Shanghai day: 23:50 on 2 April is still 2 April, not the UTC day.
    assert s.days[1].isoformat() == "2025-04-02" and s.day_totals[1] == 3 and sum(s.day_totals) == 3


def test_unique_workers_counts_each_worker_once_and_only_inside_the_range(sessions: sessionmaker[Session]) -> None:
    day = datetime(2025, 5, 1, 9, tzinfo=SHANGHAI)
    store(sessions, [
        event("s1", day, "w1"), event("s1", day + timedelta(hours=5), "w1"), event("s4", day + timedelta(days=1), "w1"),
        event("s1", day, "w2"),
        # w3 came before and after the range, never inside: only the entries can tell.
        event("s1", day - timedelta(days=20), "w3"), event("s1", day + timedelta(days=20), "w3"),
        event("s1", day, "w4", Decision.DENIED),  # refused: not a visit
        event("s1", day, None, Decision.DENIED),
    ])
    since, until = day - timedelta(days=3), day + timedelta(days=3)
    with sessions() as session:
        assert usage_summary(session, since, until).unique_workers == 2
        assert usage_summary(session, since, until, station_id="s4").unique_workers == 1
        assert usage_summary(session, since - timedelta(days=30), until + timedelta(days=30)).unique_workers == 3
    store(sessions, [event("s4", day + timedelta(days=2), "w3")])
    with sessions() as session:
        assert usage_summary(session, since, until).unique_workers == 3
        assert usage_summary(session, since, until, station_id="s1").unique_workers == 2


def test_visits_by_category_and_the_refusals_are_counted_apart(sessions: sessionmaker[Session]) -> None:
    at = datetime(2025, 6, 3, 10, tzinfo=SHANGHAI)
    store(sessions, [
        event("s1", at, "w1"), event("s1", at, "w7", kind=EventKind.QR), event("s1", at, "w3"),
        event("s1", at, "w6"),  # no category
        event("s1", at, "w2", Decision.DENIED), event("s1", at, None, Decision.DENIED),
        event("s1", at, None, Decision.DENIED), event("s1", at, None, Decision.SPOOF),
        event("s1", at, None, kind=EventKind.EXIT_REQUEST), event("s1", at, None, Decision.DENIED, EventKind.HELD_OPEN),
    ])
    with sessions() as session:
        s = usage_summary(session, at - timedelta(days=1), at + timedelta(days=1))
    assert s.by_category == {"courier": 2, "food_delivery": 0, "sanitation": 1, "designated_driver": 0, "other": 0,
                             UNCATEGORISED: 1}
    assert set(s.by_category) == {*WORKER_CATEGORIES, UNCATEGORISED}
    assert (s.visits, s.totals["visits_qr"], s.totals["denied"], s.totals["unknown"], s.totals["spoof"],
            s.totals["exits"], s.totals["alarms"]) == (4, 1, 1, 2, 1, 1, 1)


def test_busiest_stations_first_and_the_rest_summed_per_day(sessions: sessionmaker[Session]) -> None:
    at = datetime(2025, 7, 1, 10, tzinfo=SHANGHAI)
    load = {"s4": 5, "s1": 3, "s2": 2, "s3": 1}
    store(sessions, [event(sid, at + timedelta(minutes=i)) for sid, n in load.items() for i in range(n)])
    with sessions() as session:
        s = usage_summary(session, at - timedelta(days=2), at + timedelta(days=2), top_stations=2)
    assert [(x.station_id, x.visits) for x in s.stations] == [("s4", 5), ("s1", 3), ("s2", 2), ("s3", 1), ("s5", 0)]
    assert s.stations[0].name == "三号站"
    assert {k: sum(v) for k, v in s.visits_by_day.items()} == {"s4": 5, "s1": 3, OTHERS: 3}


def test_figures_stay_when_retention_purges_the_entries(sessions: sessionmaker[Session]) -> None:
    at = datetime(2025, 8, 1, 10, tzinfo=SHANGHAI)
    store(sessions, [event("s1", at + timedelta(minutes=i), "w1") for i in range(4)])
    with sessions() as session:
        session.execute(delete(Entry))
        session.commit()
        s = usage_summary(session, at - timedelta(days=1), at + timedelta(days=1))
    assert s.visits == 4 and s.by_category["courier"] == 4


def test_entries_stored_before_the_upgrade_are_counted(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade_database(engine, "0004_admin_enrollment")
        maker = make_sessionmaker(engine)
        at = datetime(2025, 9, 1, 23, tzinfo=SHANGHAI)

        def insert_as_then(table: str, rows: list[dict[str, object]]) -> None:
            """Rows written as that version's code would: only the columns its schema had."""
            have = {c["name"] for c in inspect(engine).get_columns(table)}
            then = sa_table(table, *(column(name) for name in have))
            with engine.begin() as conn:
                conn.execute(insert(then), [{k: v for k, v in row.items() if k in have} for row in rows])

        now = datetime.now(timezone.utc)
        insert_as_then("stations", [{"station_id": "s1", "name": "One", "created_at": now, "online": False,
                                     "gallery_version_acked": 0, "agent_version": "", "outbox_depth": 0,
                                     "time_zone": "Asia/Shanghai", "opening_hours": "24h", "mode": "face_or_qr",
                                     "place": ""}])
        insert_as_then("workers", [{"worker_id": "w1", "name": "W", "category": "sanitation", "status": "active",
                                    "created_at": now, "updated_at": now}])
        insert_as_then("entries", [entry_row(e, at) for e in (event("s1", at), event("s1", at, None, Decision.DENIED))])
        upgrade_database(engine)
        with maker() as session:
            s = usage_summary(session, at - timedelta(days=2), at + timedelta(days=2))
        assert (s.visits, s.totals["unknown"], s.by_category["sanitation"], s.unique_workers, s.night_visits) == (
            1, 1, 1, 1, 1)
    finally:
        engine.dispose()


def test_the_migration_counts_what_the_tables_declare() -> None:
    import importlib

    migration = importlib.import_module("server.migrations.versions.0006_usage")
    assert tuple(migration.COUNTS) == USAGE_COUNT_COLUMNS
    assert migration.CATEGORIES == WORKER_CATEGORIES


def test_bad_ranges_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        with pytest.raises(ValueError, match="timezone-aware"):
            usage_summary(session, datetime(2025, 1, 1), datetime(2025, 1, 2))
        with pytest.raises(ValueError, match="after"):
            usage_summary(session, T0, T0)
        empty = usage_summary(session, T0, T0 + timedelta(days=30))
    assert empty.visits == 0 and empty.night_share == 0.0 and len(empty.days) == 31 and empty.unique_workers == 0
    assert sum(empty.day_totals) == 0 and len(empty.stations) == len(STATIONS)


@pytest.mark.parametrize("span", [(timedelta(0), timedelta(days=1)), (timedelta(hours=5), timedelta(days=1)),
                                  (timedelta(0), timedelta(hours=10, seconds=30))],
                         ids=["a-whole-day", "whole-hours", "minutes-from-the-entries"])
def test_every_kind_and_decision_is_counted_by_the_documented_rules(
    sessions: sessionmaker[Session], span: tuple[timedelta, timedelta],
) -> None:
    day = datetime(2025, 10, 1, tzinfo=timezone.utc)
    at = day + timedelta(hours=10)
    events = [event("s1", at, w, d, k) for k in EventKind for d in Decision for w in ("w1", None)]
    store(sessions, events)
    with sessions() as session:  # read from usage_counts, from usage_hours, and from the entries
        got = usage_summary(session, day + span[0], day + span[1]).totals
    want: Counter[str] = Counter()
    for e in events:
        want.update(counts_of(e.kind, e.decision, e.worker_id, "courier" if e.worker_id else None))
    assert {k: v for k, v in got.items() if v} == dict(want)
    assert set(RULES) == set(got)


def test_each_dimension_of_the_day_series_has_one_value_per_day(sessions: sessionmaker[Session]) -> None:
    since = datetime(2025, 3, 1, tzinfo=SHANGHAI)
    store(sessions, [event("s1", since + timedelta(days=d, hours=3)) for d in range(0, 30, 3)])
    with sessions() as session:
        s = usage_summary(session, since, since + timedelta(days=30))
    assert len(s.days) == 30 and all(len(v) == 30 for v in s.visits_by_day.values())
    by_day = defaultdict(int, zip(s.days, s.day_totals))
    assert [by_day[since.date() + timedelta(days=d)] for d in range(0, 30, 3)] == [1] * 10
