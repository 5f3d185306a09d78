"""The entry-log audit query on SQLite and PostgreSQL: every filter returns exactly the right rows,
pages never repeat or lose a row (even while entries arrive), and each row carries what the audit page shows."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from models.messages import Decision, EntryEvent, EventKind, Scores
from server.db import make_sessionmaker
from server.entries import InvalidCursor
from server.entrylog import EntryFilter, EntryLogRow, entry_log_page
from server.ingest_store import store_events
from server.tables import Station, Worker

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=timezone.utc)
STATIONS = {
    "s1": ("北京东站", "Asia/Shanghai"),
    "s2": ("Urumqi rest stop", "Asia/Urumqi"),
    "s3": ("三号站", "Asia/Shanghai"),
}
WORKERS = {
    "w1": ("张三", "courier"),
    "w2": ("李四", "food_delivery"),
    "w3": ("王五", "sanitation"),
    "w4": ("Zhao Liu", "courier"),
    "w5": ("陈七", None),
}


def seed_people(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for sid, (name, tz) in STATIONS.items():
            session.add(Station(station_id=sid, name=name, time_zone=tz))
        for wid, (name, category) in WORKERS.items():
            session.add(Worker(worker_id=wid, name=name, category=category))
        session.commit()


def make_events(n: int, seed: int, start: datetime = T0) -> list[EntryEvent]:
    """Plausible door events; about a fifth share their time with the one before (ties)."""
    rng = random.Random(seed)
    events: list[EntryEvent] = []
    at = start
    for _ in range(n):
        if rng.random() > 0.2:
            at += timedelta(minutes=rng.randint(1, 90))
        decision = rng.choices([Decision.GRANTED, Decision.DENIED, Decision.SPOOF], [0.75, 0.2, 0.05])[0]
        kind = rng.choices([EventKind.FACE, EventKind.QR, EventKind.TAMPER], [0.8, 0.15, 0.05])[0]
        worker = rng.choice(list(WORKERS)) if decision is Decision.GRANTED or rng.random() < 0.3 else None
        events.append(
            EntryEvent(
                station_id=rng.choice(list(STATIONS)),
                worker_id=worker,
                decision=decision,
                kind=kind,
                reason="matched" if decision is Decision.GRANTED else "unknown face",
                scores=Scores(distance=round(rng.uniform(0.2, 0.7), 3), second_distance=0.9, frames=3, face_px=140),
                decision_ms=round(rng.uniform(100, 600), 1),
                occurred_at=at.astimezone(timezone(timedelta(hours=8))),  # any offset; stored as UTC
            )
        )
    return events


def matches(event: EntryEvent, f: EntryFilter) -> bool:
    category = WORKERS[event.worker_id][1] if event.worker_id else None
    return (
        (f.station_id is None or event.station_id == f.station_id)
        and (f.worker_id is None or event.worker_id == f.worker_id)
        and (f.category is None or category == f.category)
        and (f.decision is None or event.decision is f.decision)
        and (f.kind is None or event.kind is f.kind)
        and (f.since is None or event.occurred_at >= f.since)
        and (f.until is None or event.occurred_at < f.until)
    )


def all_pages(sessions: sessionmaker[Session], f: EntryFilter, limit: int) -> list[list[EntryLogRow]]:
    pages, cursor = [], None
    while True:
        with sessions() as session:
            page = entry_log_page(session=session, filters=f, limit=limit, cursor=cursor)
        pages.append(list(page.rows))
        cursor = page.next_cursor
        if cursor is None:
            return pages


FILTERS = [
    EntryFilter(),
    EntryFilter(station_id="s2"),
    EntryFilter(worker_id="w1"),
    EntryFilter(category="courier"),
    EntryFilter(decision=Decision.DENIED),
    EntryFilter(kind=EventKind.QR),
    EntryFilter(since=T0 + timedelta(days=2), until=T0 + timedelta(days=4)),
    EntryFilter(station_id="s1", decision=Decision.GRANTED, category="sanitation"),
    EntryFilter(station_id="s3", kind=EventKind.TAMPER, since=T0 + timedelta(days=1)),
    EntryFilter(worker_id="w2", decision=Decision.SPOOF),
    EntryFilter(station_id="nowhere"),
]


def test_every_filter_returns_exactly_the_matching_rows_newest_first(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    seed_people(sessions)
    events = make_events(300, seed=7)
    with sessions() as session:
        store_events(session=session, events=events)
    by_id = {str(e.event_id): e for e in events}
    for f in FILTERS:
        pages = all_pages(sessions, f, limit=13)
        rows = [r for page in pages for r in page]
        expected = {str(e.event_id) for e in events if matches(e, f)}
        got = [r.event_id for r in rows]
        assert len(got) == len(set(got)), f"a row appeared twice for {f}"
        assert set(got) == expected, f"wrong rows for {f}"
        assert all(len(p) == 13 for p in pages[:-1]) and len(pages[-1]) <= 13
        keys = [(r.occurred_at, r.id) for r in rows]
        assert keys == sorted(keys, reverse=True), f"not newest first for {f}"
        for r in rows:  # what the page shows comes from the right event
            e = by_id[r.event_id]
            assert (r.station_id, r.decision, r.kind, r.distance) == (
                e.station_id, e.decision.value, e.kind.value, e.scores.distance
            )
    # Sanity of the data itself: the filters above are not all trivially empty or complete.
    sizes = [sum(matches(e, f) for e in events) for f in FILTERS]
    assert sizes[0] == 300 and sizes[-1] == 0 and all(0 < s < 300 for s in sizes[1:-1]), sizes


def test_rows_carry_station_time_zone_worker_and_scores(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    seed_people(sessions)
    at = datetime(2025, 6, 1, 23, 30, tzinfo=timezone.utc)
    received = at + timedelta(minutes=7)  # the station was offline for a while
    event = EntryEvent(
        station_id="s2",
        worker_id="w2",
        decision=Decision.GRANTED,
        reason="matched",
        scores=Scores(distance=0.31, second_distance=0.62, frames=4, face_px=151),
        decision_ms=420.5,
        occurred_at=at,
    )
    with sessions() as session:
        store_events(session=session, events=[event], received_at=received)
        row = entry_log_page(session=session, filters=EntryFilter(worker_id="w2")).rows[0]
    assert row.occurred_at == at and row.received_at == received
    assert (row.station_name, row.station_time_zone) == ("Urumqi rest stop", "Asia/Urumqi")
    assert (row.worker_name, row.worker_category) == ("李四", "food_delivery")
    assert (row.distance, row.second_distance, row.frames, row.face_px, row.decision_ms) == (0.31, 0.62, 4, 151, 420.5)
    assert (row.decision, row.reason, row.kind) == ("granted", "matched", "face")

    # The worker is deleted, the station removed: the entry stays, without their names.
    with sessions() as session:
        session.execute(delete(Worker).where(Worker.worker_id == "w2"))
        session.execute(delete(Station).where(Station.station_id == "s2"))
        session.commit()
        row = entry_log_page(session=session, filters=EntryFilter(worker_id="w2")).rows[0]
    assert row.event_id == str(event.event_id)
    assert (row.worker_name, row.worker_category, row.station_name, row.station_time_zone) == (None, None, None, None)


def test_paging_while_entries_arrive_never_repeats_or_loses_a_row(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    seed_people(sessions)
    events = make_events(120, seed=11)
    with sessions() as session:
        store_events(session=session, events=events)
    f = EntryFilter(station_id="s1")
    before = {str(e.event_id) for e in events if matches(e, f)}
    seen: list[str] = []
    cursor = None
    arrivals = iter(range(100))
    while True:
        with sessions() as session:
            page = entry_log_page(session=session, filters=f, limit=5, cursor=cursor)
            seen += [r.event_id for r in page.rows]
            # Between two pages, a newer entry and one sharing the last row's station time arrive.
            if page.rows:
                n = next(arrivals)
                last = page.rows[-1]
                later = T0 + timedelta(days=400, minutes=n)
                newer = EntryEvent(station_id="s1", decision=Decision.DENIED, occurred_at=later)
                tie = EntryEvent(station_id="s1", decision=Decision.DENIED, occurred_at=last.occurred_at)
                store_events(session=session, events=[newer, tie])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row was shown twice"
    assert before <= set(seen), "a row that existed all along was never shown"
    newer_ids = {r.event_id for r in all_pages(sessions, EntryFilter(since=T0 + timedelta(days=399)), 100)[0]}
    assert newer_ids and not newer_ids & set(seen), "a row newer than the first page leaked into later pages"


def test_bad_input_is_refused_clearly(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        with pytest.raises(InvalidCursor, match="next_cursor"):
            entry_log_page(session=session, cursor="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            entry_log_page(session=session, limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        EntryFilter(since=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="unknown category"):
        EntryFilter(category="astronaut")
    f = EntryFilter(decision="denied", station_id="s1")  # type: ignore[arg-type]
    assert f.as_dict() == {"station_id": "s1", "decision": "denied"} and f.decision is Decision.DENIED
