"""CSV export on SQLite and PostgreSQL: it parses back with exactly the filtered rows and the Chinese names,
opens in Excel (BOM, no formulas from station text), streams with flat memory, and over HTTP only
admins and auditors get it, each export audited."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, insert, select

from models.messages import Decision, EntryEvent, EventKind, Scores
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.entrylog import EntryFilter
from server.export import BOM, EXPORT_COLUMNS, export_csv
from server.ingest_store import entry_row, store_events
from server.runtime import ServerRuntime
from server.tables import AuditEvent, Entry, Role
from server import users
from tests.support.services import REPO, Mosquitto, postgres_url  # noqa: F401  (postgres_url: a fixture)

from .conftest import TOKEN, make_settings, start_server
from .test_entrylog import T0, WORKERS, make_events, matches, seed_people

ENGLISH = [english for _, english in EXPORT_COLUMNS]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    db = make_engine(database_url)
    upgrade_database(db)
    try:
        yield db
    finally:
        db.dispose()


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    assert text.startswith(BOM), "no UTF-8 byte order mark: Excel would show the Chinese names as mojibake"
    reader = csv.reader(io.StringIO(text.removeprefix(BOM), newline=""))
    header = next(reader)
    return header, [dict(zip(ENGLISH, line, strict=True)) for line in reader]


def test_csv_parses_back_with_the_filtered_rows_names_and_station_times(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    seed_people(sessions)
    events = make_events(150, seed=3)
    at = datetime(2025, 7, 1, 20, 15, 5, tzinfo=timezone.utc)
    odd = EntryEvent(  # a station's text that a spreadsheet would run as a formula
        station_id="s2", worker_id="w1", decision=Decision.DENIED, kind=EventKind.QR,
        reason='=HYPERLINK("http://evil.example","click"), line 2\n"quoted"', occurred_at=at,
        scores=Scores(distance=0.55, frames=2),
    )
    with sessions() as session:
        store_events(session=session, events=[*events, odd], received_at=at + timedelta(seconds=90))

    text = "".join(export_csv(engine, EntryFilter(), batch_size=7))
    header, rows = parse(text)
    assert header == ENGLISH
    assert sorted(r["Event ID"] for r in rows) == sorted(str(e.event_id) for e in [*events, odd])

    f = EntryFilter(category="courier", decision=Decision.GRANTED)
    header, rows = parse("".join(export_csv(engine, f, headers=[h.upper() for h in ENGLISH], batch_size=5)))
    assert header == [h.upper() for h in ENGLISH]
    expected = {str(e.event_id): e for e in events if matches(e, f)}
    assert expected and {r["Event ID"] for r in rows} == set(expected) and len(rows) == len(expected)
    assert {r["Worker"] for r in rows} == {WORKERS[e.worker_id][0] for e in expected.values()}  # type: ignore[index]
    assert "张三" in {r["Worker"] for r in rows}
    for r in rows:
        tz = "Asia/Urumqi" if r["Station ID"] == "s2" else "Asia/Shanghai"
        want = expected[r["Event ID"]].occurred_at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
        assert (r["Station time"], r["Time zone"]) == (want, tz)
    moments = [expected[r["Event ID"]].occurred_at for r in rows]
    assert moments == sorted(moments, reverse=True), "not newest first"

    _, rows = parse("".join(export_csv(engine, EntryFilter(station_id="s2", kind=EventKind.QR, since=at))))
    assert len(rows) == 1
    row = rows[0]
    # Urumqi is UTC+6: 20:15:05 UTC is 02:15:05 the next day there; the server got it 90 s later.
    assert (row["Station time"], row["Received by server"]) == ("2025-07-02 02:15:05", "2025-07-02 02:16:35")
    assert row["Reason"].startswith("'=HYPERLINK") and row["Reason"].endswith('line 2\n"quoted"')
    shown = (row["Station"], row["Worker"], row["Category"], row["Decision"])
    assert shown == ("Urumqi rest stop", "张三", "courier", "denied")
    assert (row["Distance"], row["Frames"], row["Second distance"]) == ("0.55", "2", "")

    assert parse("".join(export_csv(engine, EntryFilter(station_id="nowhere"))))[1] == []


_PROBE = r"""
import json, sys, psutil
from server.db import make_engine
from server.entrylog import EntryFilter, entry_log_select
from server.export import csv_chunks, export_csv
url, mode = sys.argv[1], sys.argv[2]
engine = make_engine(url)
with engine.connect() as conn:  # warm up: imports, connection, statement compilation
    conn.execute(entry_log_select(EntryFilter()).limit(10)).all()
proc = psutil.Process()
base = proc.memory_info().rss
if mode == "stream":
    chunks = export_csv(engine, EntryFilter(), batch_size=1000)
else:  # the control: every row read into memory first
    with engine.connect() as conn:
        rows = conn.execute(entry_log_select(EntryFilter())).all()
    chunks = csv_chunks(rows[i:i + 1000] for i in range(0, len(rows), 1000))
lines, peak, at_tenth = 0, base, None
for chunk in chunks:
    lines += chunk.count("\r\n")
    rss = proc.memory_info().rss
    peak = max(peak, rss)
    if at_tenth is None and lines >= 5000:
        at_tenth = rss
print(json.dumps({"lines": lines, "base": base, "peak": peak, "at_tenth": at_tenth}))
"""


def _probe(url: str, mode: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, url, mode], cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def bulk_insert(engine: Engine, rows: list[dict[str, object]]) -> None:
    """Rows into entries quickly: COPY on PostgreSQL (its statement trigger runs once), executemany on SQLite."""
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            conn.execute(insert(Entry.__table__), rows)
        return
    columns = list(rows[0])
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor, cursor.copy(f"COPY entries ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        raw.commit()
    finally:
        raw.close()


def test_export_memory_stays_flat_on_50k_rows(engine: Engine, database_url: str) -> None:
    sessions = make_sessionmaker(engine)
    seed_people(sessions)
    n = 50_000
    # Plain rows, inserted in bulk: the stations' messages are not what is under test here.
    template = entry_row(make_events(1, seed=1)[0], T0)
    rows = [
        {**template, "event_id": f"{i:036d}", "occurred_at": T0 + timedelta(seconds=37 * i), "reason": f"row {i}"}
        for i in range(n)
    ]
    bulk_insert(engine, rows)
    mb = 1024 * 1024
    streamed = _probe(database_url, "stream")
    assert streamed["lines"] == n + 1  # the header, then every row
    growth = (streamed["peak"] - streamed["base"]) / mb
    late_growth = (streamed["peak"] - streamed["at_tenth"]) / mb
    # The control reads everything first, as an export without a streaming cursor would: the same
    # measurement must see it, or it proves nothing.
    buffered = _probe(database_url, "buffered")
    buffered_growth = (buffered["peak"] - buffered["base"]) / mb
    assert buffered_growth > 40, f"the control grew only {buffered_growth:.1f} MB: the probe cannot tell"
    assert growth < 12, f"streaming grew {growth:.1f} MB over 50k rows (reading everything: {buffered_growth:.0f} MB)"
    assert late_growth < 4, f"memory still grew {late_growth:.1f} MB between 5k and 50k rows"


# -- over HTTP: roles, audit ---------------------------------------------------------------------


@pytest.mark.broker
def test_api_filters_csv_roles_and_audit(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    runtime: ServerRuntime = start_server(make_settings(tmp_path, mosquitto, database_url=database_url), mosquitto)
    try:
        assert runtime.engine is not None
        sessions = make_sessionmaker(runtime.engine)
        seed_people(sessions)
        events = make_events(80, seed=5)
        with sessions() as session:
            store_events(session=session, events=events)
            cookies = {}
            for name, role in (("auditor1", Role.AUDITOR), ("staff1", Role.STAFF)):
                user = users.create_user(session, username=name, password="Tr0ub4dor&3-horse", role=role)
                session.commit()
                cookies[name] = users.start_session(session, user=user, hours=1, remote_addr="127.0.0.1")

        query = {"category": "sanitation", "decision": "granted"}
        wanted = EntryFilter(category="sanitation", decision=Decision.GRANTED)
        expected = {str(e.event_id) for e in events if matches(e, wanted)}
        with httpx.Client(base_url=runtime.url, timeout=60) as web:
            # A Cookie header per request: the client itself keeps no cookies between identities.
            auditor = {"Cookie": f"ws_session={cookies['auditor1']}"}
            staff = {"Cookie": f"ws_session={cookies['staff1']}"}
            page = web.get("/api/entries", params={**query, "limit": 1000}, headers=auditor)
            assert page.status_code == 200, page.text
            items = page.json()["items"]
            assert {i["event_id"] for i in items} == expected
            assert {(i["worker_name"], i["worker_category"]) for i in items} == {("王五", "sanitation")}
            assert {i["station_time_zone"] for i in items} <= {"Asia/Shanghai", "Asia/Urumqi"}
            assert all(i["station_name"] in ("北京东站", "Urumqi rest stop", "三号站") for i in items)

            got = web.get("/api/entries.csv", params=query, headers=auditor)
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
            assert "attachment" in got.headers["content-disposition"]
            assert got.content.startswith(b"\xef\xbb\xbf")
            header, rows = parse(got.content.decode("utf-8"))
            assert header[0] == "站点时间" and header[6] == "劳动者"  # the auditor's language: Chinese
            assert {r["Event ID"] for r in rows} == expected

            assert web.get("/api/entries.csv", params=query, headers=staff).status_code == 403
            assert web.get("/api/entries", headers=staff).status_code == 403
            assert web.get("/api/entries.csv").status_code == 401
            token = {"Authorization": f"Bearer {TOKEN}"}
            bad = web.get("/api/entries", params={"category": "astronaut"}, headers=token)
            assert bad.status_code == 422
            scripted = web.get("/api/entries.csv", params={"station_id": "s1"}, headers=token)
            assert parse(scripted.text)[0] == ENGLISH
            assert len(parse(scripted.text)[1]) == sum(e.station_id == "s1" for e in events)

        with sessions() as session:
            exports = select(AuditEvent).where(AuditEvent.action == "entries.export").order_by(AuditEvent.id)
            trail = session.scalars(exports).all()
        assert [(a.actor, a.detail) for a in trail] == [
            ("auditor1", {"category": "sanitation", "decision": "granted"}),
            ("api-token", {"station_id": "s1"}),
        ]
    finally:
        runtime.stop()

