"""The entry-log page in a real Chromium: an auditor filters by station and decision, sees only those rows
with station-local times, pages on, exports the CSV (audited); staff may not see it."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from models.messages import Decision, EntryEvent, EventKind, Scores
from server.ingest_store import store_events
from server.tables import AuditEvent, Station, Worker
from tests.support.browser import WebApp

T0 = datetime(2025, 7, 1, 0, 0, tzinfo=timezone.utc)
# A denied attempt at the Urumqi station (UTC+6) late in the UTC evening: the next day there.
MARKED_AT = datetime(2025, 7, 1, 20, 15, 5, tzinfo=timezone.utc)


def seed(web: WebApp) -> list[EntryEvent]:
    events: list[EntryEvent] = []
    for i in range(130):
        decision = (Decision.GRANTED, Decision.GRANTED, Decision.DENIED, Decision.GRANTED, Decision.SPOOF)[i % 5]
        events.append(EntryEvent(
            station_id=("s1", "s2", "s3")[i % 3],
            worker_id=("w1", "w2")[i % 2] if decision is Decision.GRANTED else None,
            decision=decision,
            kind=EventKind.FACE,
            reason="matched" if decision is Decision.GRANTED else "unknown face",
            scores=Scores(distance=0.4, frames=3, face_px=120),
            occurred_at=T0 - timedelta(hours=i),
        ))
    marked = EntryEvent(station_id="s2", worker_id="w1", decision=Decision.DENIED, reason="worker suspended",
                        occurred_at=MARKED_AT, scores=Scores(distance=0.31, second_distance=0.72, frames=4))
    events.append(marked)
    with web.sessions() as session:
        session.add_all([
            Station(station_id="s1", name="北京东站", time_zone="Asia/Shanghai"),
            Station(station_id="s2", name="乌鲁木齐站", time_zone="Asia/Urumqi"),
            Station(station_id="s3", name="Third stop", time_zone="Asia/Shanghai"),
            Worker(worker_id="w1", name="张三", category="courier"),
            Worker(worker_id="w2", name="李四", category="sanitation"),
        ])
        session.commit()
        store_events(session=session, events=events, received_at=MARKED_AT + timedelta(minutes=2))
    return events


def test_auditor_filters_pages_and_exports(web: WebApp, browser) -> None:  # noqa: ANN001
    events = seed(web)
    page = web.login(browser, "auditor")
    page.goto(web.url + "/entries")
    assert page.locator("#entries tbody tr").count() == 50
    first = set(page.locator("#entries tbody tr").evaluate_all("rows => rows.map(r => r.dataset.eventId)"))
    page.click("#next-page")
    second = set(page.locator("#entries tbody tr").evaluate_all("rows => rows.map(r => r.dataset.eventId)"))
    assert len(second) == 50 and not first & second

    page.goto(web.url + "/entries")
    page.select_option("select[name=station_id]", "s2")
    page.select_option("select[name=decision]", "denied")
    page.click("#apply-filters")
    page.wait_for_load_state()
    table = page.locator("#entries tbody tr")
    expected = {str(e.event_id) for e in events if e.station_id == "s2" and e.decision is Decision.DENIED}
    shown = table.evaluate_all("rows => rows.map(r => [r.dataset.eventId, r.dataset.station, r.dataset.decision])")
    assert {row[0] for row in shown} == expected and len(shown) == len(expected)
    assert {(row[1], row[2]) for row in shown} == {("s2", "denied")}
    assert page.locator("#next-page").count() == 0
    # The station's own time zone: 20:15:05 UTC is 02:15:05 the next morning in Urumqi.
    marked = page.locator(f"tr[data-event-id='{events[-1].event_id}']")
    assert marked.locator("td.occurred").inner_text() == "2025-07-02 02:15:05"
    assert marked.locator("td.received").inner_text() == "2025-07-02 02:17:05"
    assert "张三" in marked.locator("td.worker").inner_text() and "Asia/Urumqi" in marked.inner_text()
    assert "0.310 / 0.720" in marked.inner_text() and "worker suspended" in marked.inner_text()

    with page.expect_download() as info:
        page.click("#export-csv")
    raw = Path(info.value.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "no BOM: Excel would garble the Chinese names"
    text = raw.decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text, newline="")))
    assert lines[0][:2] == ["Station time", "Received by server"]
    exported = {line[-1] for line in lines[1:]}
    assert exported == expected and len(lines) == len(expected) + 1
    marked_line = next(line for line in lines if line[-1] == str(events[-1].event_id))
    assert marked_line[:7] == [
        "2025-07-02 02:15:05", "2025-07-02 02:17:05", "Asia/Urumqi", "s2", "乌鲁木齐站", "w1", "张三",
    ]
    with web.sessions() as session:
        exports = [(a.actor, a.detail) for a in session.query(AuditEvent).filter_by(action="entries.export")]
    assert exports == [("auditor", {"station_id": "s2", "decision": "denied"})]


def test_chinese_dates_and_bad_input(web: WebApp, browser) -> None:  # noqa: ANN001
    seed(web)
    page = web.login(browser, "admin", language="zh_CN")
    # Whole days in the station's zone, end day included: 2 July in Urumqi holds only the marked entry.
    page.goto(web.url + "/entries?station_id=s2&from=2025-07-02&to=2025-07-02")
    assert page.locator("#entries tbody tr").count() == 1
    assert "站点时间" in page.locator("#entries thead").inner_text()
    assert "拒绝" in page.locator("#entries tbody").inner_text()
    page.goto(web.url + "/entries?from=2025-13-01")
    assert "开始日期格式不正确" in page.locator("[role=alert]").inner_text()
    assert page.locator("#entries").count() == 0


def test_staff_may_not_see_or_export_entries(web: WebApp, browser) -> None:  # noqa: ANN001
    seed(web)
    page = web.login(browser, "staff")
    response = page.goto(web.url + "/entries")
    assert response is not None and response.status == 403
    assert page.locator("#entries").count() == 0
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "ws_session")
    export = httpx.get(web.url + "/entries.csv", headers={"Cookie": f"ws_session={cookie}"}, trust_env=False)
    assert export.status_code == 403 and "张三" not in export.text
    anonymous = httpx.get(web.url + "/entries.csv", trust_env=False, follow_redirects=False)
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
    with web.sessions() as session:
        assert session.query(AuditEvent).filter_by(action="entries.export").count() == 0
