"""The usage dashboard in a real Chromium: the totals, night share, categories and busiest stations of the
entries stored, in station time; a month of realistic data matches a count made straight from the entries;
nothing is loaded from another site; staff get the 403 page.

With WAYSTATION_DOC_SCREENSHOTS=docs/img the realistic month is also saved as docs/img/admin-dashboard.png.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from models.messages import Decision, EntryEvent, EventKind
from server.ingest_store import store_events
from server.tables import Entry, Station, Worker
from tests.support.browser import WebApp
from tests.support.usage_data import fill

SHANGHAI = ZoneInfo("Asia/Shanghai")
SHOTS = os.environ.get("WAYSTATION_DOC_SCREENSHOTS")
DAY = date(2025, 6, 10)


def at(day: date, hour: int, minute: int = 0, tz: ZoneInfo = SHANGHAI) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)


def seed(web: WebApp) -> None:
    """Two stations, three workers; 6 visits of which 2 at night, refusals, and one visit outside the range."""
    with web.sessions() as session:
        session.add_all([
            Station(station_id="bj-1", name="北京东站", time_zone="Asia/Shanghai"),
            Station(station_id="xj-1", name="<b>Kashgar</b> stop", time_zone="Asia/Urumqi"),
            Worker(worker_id="w1", name="张三", category="courier"),
            Worker(worker_id="w2", name="李四", category="sanitation"),
            Worker(worker_id="w3", name="王五", category="courier"),
        ])
        session.commit()
        events = [
            EntryEvent(station_id="bj-1", worker_id="w1", decision=Decision.GRANTED, occurred_at=at(DAY, 23, 30)),
            EntryEvent(station_id="bj-1", worker_id="w1", decision=Decision.GRANTED, occurred_at=at(DAY, 9)),
            EntryEvent(station_id="bj-1", worker_id="w2", decision=Decision.GRANTED, kind=EventKind.QR,
                       occurred_at=at(DAY + timedelta(days=1), 12)),
            EntryEvent(station_id="bj-1", worker_id="w3", decision=Decision.GRANTED, occurred_at=at(DAY, 14)),
            # 01:15 in Urumqi (UTC+6) is night there, although it is 03:15 in Beijing and 19:15 UTC.
            EntryEvent(station_id="xj-1", worker_id="w3", decision=Decision.GRANTED,
                       occurred_at=at(DAY + timedelta(days=2), 1, 15, ZoneInfo("Asia/Urumqi"))),
            EntryEvent(station_id="xj-1", worker_id="w2", decision=Decision.GRANTED, occurred_at=at(DAY, 16)),
            EntryEvent(station_id="bj-1", decision=Decision.DENIED, occurred_at=at(DAY, 10)),
            EntryEvent(station_id="bj-1", decision=Decision.SPOOF, occurred_at=at(DAY, 10, 5)),
            EntryEvent(station_id="bj-1", kind=EventKind.HELD_OPEN, decision=Decision.DENIED, occurred_at=at(DAY, 11)),
            EntryEvent(station_id="bj-1", kind=EventKind.EXIT_REQUEST, decision=Decision.GRANTED,
                       occurred_at=at(DAY, 11)),
            EntryEvent(station_id="bj-1", worker_id="w1", decision=Decision.GRANTED,
                       occurred_at=at(DAY - timedelta(days=30), 12)),  # before the range
        ]
        store_events(session=session, events=events)


def test_the_dashboard_shows_the_figures_of_the_entries(web: WebApp, browser) -> None:  # noqa: ANN001
    seed(web)
    page = web.login(browser, "auditor")
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if urlsplit(r.url).netloc != urlsplit(web.url).netloc else None)
    page.goto(f"{web.url}/dashboard?from={DAY - timedelta(days=2)}&to={DAY + timedelta(days=4)}")
    assert page.locator("#total-visits").inner_text() == "6"
    assert page.locator("#unique-workers").inner_text() == "3"
    assert page.locator("#night-share").inner_text() == "33.3 %"  # 23:30 Beijing and 01:15 Urumqi
    assert page.locator("#night-visits").inner_text() == "2 visits"
    refusals = page.locator("#refusals").inner_text()
    assert "Unknown face\t1" in refusals and "Spoof\t1" in refusals and "Door alarms\t1" in refusals
    categories = dict(page.locator("#table-categories tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.category, r.cells[1].innerText])"))
    assert categories == {"courier": "4", "sanitation": "2", "food_delivery": "0", "designated_driver": "0",
                          "other": "0", "uncategorised": "0"}
    stations = page.locator("#table-stations tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.station, r.cells[1].innerText])")
    assert stations == [["bj-1", "4"], ["xj-1", "2"]]
    # Days in Beijing time: the 23:30 visit counts on its own day.
    days = dict(page.locator("#table-days tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].innerText, r.cells[r.cells.length - 1].innerText])"))
    assert days[DAY.isoformat()] == "4" and days[(DAY + timedelta(days=1)).isoformat()] == "1"
    assert days[(DAY + timedelta(days=2)).isoformat()] == "1" and len(days) == 7
    hours = page.locator("#table-hours tbody tr").evaluate_all("rows => rows.map(r => r.cells[1].textContent)")
    assert hours[23] == "1" and hours[1] == "1" and hours[9] == "1" and sum(map(int, hours)) == 6
    # The charts are drawn by the server, readable by a screen reader, and escape what admins typed.
    assert page.locator("svg#chart-days title#chart-days-title").text_content() == "Visits per day"
    assert page.locator("svg#chart-stations").get_attribute("role") == "img"
    assert page.locator("svg#chart-stations text", has_text="<b>Kashgar</b> stop").count() == 1
    assert page.locator("svg#chart-stations b").count() == 0
    assert not outside, f"the dashboard loaded from elsewhere: {outside}"


def test_one_station_in_its_own_time_zone(web: WebApp, browser) -> None:  # noqa: ANN001
    seed(web)
    page = web.login(browser, "admin")
    page.goto(f"{web.url}/dashboard")
    page.select_option("select[name=station]", "xj-1")
    page.fill("input[name=from]", (DAY - timedelta(days=1)).isoformat())
    page.fill("input[name=to]", (DAY + timedelta(days=3)).isoformat())
    page.click("#apply-range")
    assert "station=xj-1" in page.url
    assert page.locator("#total-visits").inner_text() == "2" and page.locator("#unique-workers").inner_text() == "2"
    assert "Asia/Urumqi" in page.locator("#usage-filters + p").inner_text()
    assert page.locator("#night-share").inner_text() == "50.0 %"


def test_bad_dates_are_explained_and_staff_may_not_look(web: WebApp, browser) -> None:  # noqa: ANN001
    page = web.login(browser, "admin")
    page.goto(f"{web.url}/dashboard?from=2025-13-01&to=2025-01-01")
    assert "The start date is not a date (use YYYY-MM-DD)." in page.locator("[role=alert]").all_inner_texts()
    page.goto(f"{web.url}/dashboard?from=2020-01-01&to=2025-01-01")
    assert page.locator("[role=alert]").inner_text() == "Choose at most 366 days."
    assert page.locator("#table-days tbody tr").count() == 366
    staff = web.login(browser, "staff")
    response = staff.goto(f"{web.url}/dashboard")
    assert response is not None and response.status == 403
    assert staff.locator("h1").inner_text() == "Not allowed" and staff.locator("#total-visits").count() == 0


def test_a_realistic_month_matches_a_direct_count(web: WebApp, browser) -> None:  # noqa: ANN001
    assert web.runtime.engine is not None
    filled = fill(web.runtime.engine, n_entries=3000, days=30, stations=5, workers=400)
    with web.sessions() as session:
        granted = (Entry.decision == "granted", Entry.kind.in_(("face", "qr")),
                   Entry.occurred_at >= filled.since, Entry.occurred_at < filled.until)
        visits = session.scalar(select(func.count()).where(*granted))
        workers = session.scalar(select(func.count(func.distinct(Entry.worker_id))).where(*granted))
        busiest = session.execute(select(Entry.station_id, func.count()).where(*granted)
                                  .group_by(Entry.station_id).order_by(func.count().desc())).first()
    page = web.login(browser, "admin", language="zh_CN", viewport={"width": 1280, "height": 900})
    page.goto(web.url + "/dashboard")  # the last 30 days: what was filled
    assert page.locator("#total-visits").inner_text().replace(",", "") == str(visits)
    assert page.locator("#unique-workers").inner_text().replace(",", "") == str(workers)
    assert page.locator("#table-stations tbody tr").first.get_attribute("data-station") == busiest[0]
    assert page.locator("h1").inner_text() == "使用统计"
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "admin-dashboard.png"), full_page=True)
