"""GET /api/entries: keyset pages return every entry exactly once; filters; worker names."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pytest

from models import topics
from models.messages import Decision, EntryEvent, encode
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto

from .conftest import mqtt_link, publish_acked, random_encodings, wait_until

pytestmark = pytest.mark.broker

T0 = datetime(2025, 5, 1, 8, 0, tzinfo=timezone.utc)


def _all_pages(api: httpx.Client, **params: object) -> list[list[dict]]:
    pages: list[list[dict]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = api.get("/api/entries", params=query).json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_keyset_pages_and_filters(server: ServerRuntime, api: httpx.Client, mosquitto: Mosquitto) -> None:
    assert server.ingest is not None
    for sid in ("s1", "s2"):
        api.post("/api/stations", json={"station_id": sid, "name": sid.upper()}).raise_for_status()
    worker = api.post(
        "/api/workers/encodings", json={"name": "Zhang San", "encodings": random_encodings(np.random.default_rng(5))}
    ).json()
    events = []
    for i in range(31):
        # Groups of three share one timestamp, so ties must be broken by the row id.
        at = T0 + timedelta(minutes=i // 3)
        granted = i % 4 != 0
        events.append(
            EntryEvent(
                station_id="s1" if i % 2 else "s2",
                decision=Decision.GRANTED if granted else Decision.DENIED,
                worker_id=worker["worker_id"] if granted else None,
                occurred_at=at.astimezone(timezone(timedelta(hours=-5))),  # any offset; stored as UTC
            )
        )
    with mqtt_link(mosquitto) as link:
        publish_acked(link, [(topics.entry(e.station_id), encode(e)) for e in events])
    wait_until(lambda: server.ingest.counters["stored"] == len(events), 20, "all entries stored")

    pages = _all_pages(api, limit=7)
    assert [len(p) for p in pages] == [7, 7, 7, 7, 3]
    items = [item for page in pages for item in page]
    assert sorted(i["event_id"] for i in items) == sorted(str(e.event_id) for e in events)
    times = [datetime.fromisoformat(i["occurred_at"]) for i in items]
    assert times == sorted(times, reverse=True)
    granted_items = [i for i in items if i["decision"] == "granted"]
    assert granted_items and all(i["worker_name"] == "Zhang San" for i in granted_items)

    # A newer entry arriving mid-way through paging neither repeats nor hides an older one.
    first = api.get("/api/entries", params={"limit": 10}).json()
    late = EntryEvent(station_id="s1", decision=Decision.DENIED, occurred_at=T0 + timedelta(hours=1))
    with mqtt_link(mosquitto) as link:
        publish_acked(link, [(topics.entry("s1"), encode(late))])
    wait_until(lambda: server.ingest.counters["stored"] == len(events) + 1, 10, "the late entry")
    rest = api.get("/api/entries", params={"limit": 1000, "cursor": first["next_cursor"]}).json()["items"]
    assert len(first["items"]) + len(rest) == len(events)
    assert str(late.event_id) not in {i["event_id"] for i in rest}

    by_station = [i for p in _all_pages(api, station_id="s1", limit=4) for i in p]
    assert {i["station_id"] for i in by_station} == {"s1"}
    assert len(by_station) == sum(e.station_id == "s1" for e in events) + 1

    denied = [i for p in _all_pages(api, decision="denied", limit=3) for i in p]
    assert len(denied) == sum(e.decision is Decision.DENIED for e in events) + 1

    mine = [i for p in _all_pages(api, worker_id=worker["worker_id"], limit=5) for i in p]
    assert len(mine) == len(granted_items)

    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)
    window = api.get("/api/entries", params={"since": since.isoformat(), "until": until.isoformat()}).json()["items"]
    assert len(window) == 9  # minutes 2, 3 and 4, three entries each
    assert all(since <= datetime.fromisoformat(i["occurred_at"]) < until for i in window)

    # The worker is deleted: entries stay, the name (personal data) is gone.
    api.delete(f"/api/workers/{worker['worker_id']}").raise_for_status()
    after = api.get("/api/entries", params={"worker_id": worker["worker_id"], "limit": 1000}).json()["items"]
    assert len(after) == len(granted_items) and all(i["worker_name"] is None for i in after)
