"""A station's sync request over real mosquitto: paged replies cover every change, snapshots, acks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.mqtt import MqttLink
from models import topics
from models.messages import GalleryChangeMessage, GalleryOp, SyncAck, SyncReply, SyncRequest, decode, encode
from server.config import ServerSettings
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto

from .conftest import Inbox, make_settings, mqtt_link, random_encodings, wait_until

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(tmp_path: Path, mosquitto: Mosquitto) -> ServerSettings:
    return make_settings(tmp_path, mosquitto, sync_page_size=2)


def _sync(link: MqttLink, inbox: Inbox, station: str, since: int) -> list[SyncReply]:
    request = SyncRequest(station_id=station, since_version=since)
    link.publish(topics.sync_request(station), encode(request))
    replies = [decode(inbox.get(), SyncReply)]
    while replies[-1].more:
        replies.append(decode(inbox.get(), SyncReply))
    assert all(r.request_id == request.request_id for r in replies)
    assert [r.page for r in replies] == list(range(len(replies)))
    return replies


def test_sync_pages_cover_every_change(api: httpx.Client, station: str, mosquitto: Mosquitto) -> None:
    rng = np.random.default_rng(11)
    workers = [
        api.post("/api/workers/encodings", json={"name": f"W{i}", "encodings": random_encodings(rng, 1 + i % 3)}).json()
        for i in range(5)
    ]
    suspended, deleted = workers[1]["worker_id"], workers[3]["worker_id"]
    api.post(f"/api/workers/{suspended}/suspend").raise_for_status()
    latest = api.delete(f"/api/workers/{deleted}").json()["version"]

    with mqtt_link(mosquitto) as link:
        inbox = Inbox(link, topics.sync_reply(station))
        replies = _sync(link, inbox, station, since=0)
        changes = [c for r in replies for c in r.changes]

        assert all(len(r.changes) <= 2 for r in replies) and len(replies) == 3
        assert [r.more for r in replies] == [True, True, False]
        assert all(r.latest_version == latest and not r.snapshot for r in replies)
        assert sorted(c.worker_id for c in changes) == sorted(w["worker_id"] for w in workers)
        versions = [c.version for c in changes]
        assert versions == sorted(versions) and versions[-1] == latest
        by_id = {c.worker_id: c for c in changes}
        assert by_id[deleted].op is GalleryOp.DELETE and by_id[deleted].encodings == ()
        assert by_id[suspended].op is GalleryOp.UPSERT and by_id[suspended].active is False
        for w in workers:
            if w["worker_id"] != deleted:
                assert len(by_id[w["worker_id"]].encodings) == w["samples"]

        # A station that holds the version of the third enrollment gets only what came after it.
        later = _sync(link, inbox, station, since=workers[2]["version"])
        later_ids = {c.worker_id for r in later for c in r.changes}
        assert later_ids == {workers[4]["worker_id"], workers[3]["worker_id"], suspended}

        # A station ahead of the server (e.g. a server restored from backup) gets a snapshot.
        snapshot = _sync(link, inbox, station, since=latest + 100)
        assert all(r.snapshot for r in snapshot)
        current = {c.worker_id for r in snapshot for c in r.changes}
        assert current == {w["worker_id"] for w in workers} - {deleted}

        # Up to date: one empty page.
        (last,) = _sync(link, inbox, station, since=latest)
        assert last.changes == () and last.latest_version == latest

        link.publish(topics.sync_ack(station), encode(SyncAck(station_id=station, version=latest)))
        wait_until(
            lambda: api.get("/api/stations").json()["items"][0]["gallery_version_acked"] == latest, what="the ack"
        )


def test_unregistered_station_gets_no_gallery(server: ServerRuntime, api: httpx.Client, mosquitto: Mosquitto) -> None:
    assert server.ingest is not None
    rng = np.random.default_rng(12)
    api.post("/api/workers/encodings", json={"name": "Secret", "encodings": random_encodings(rng)}).raise_for_status()
    before = server.ingest.counters["rejected_unknown_station"]
    with mqtt_link(mosquitto) as link:
        inbox = Inbox(link, topics.sync_reply("intruder"))
        link.publish(topics.sync_request("intruder"), encode(SyncRequest(station_id="intruder", since_version=0)))
        wait_until(lambda: server.ingest.counters["rejected_unknown_station"] == before + 1, what="the refusal")
        inbox.assert_empty(wait=0.5)
    assert server.ingest.counters["sync_pages"] == 0


# -- confirmations per change and station; validity windows and access lists (sync issue) ----------------


def _register(api: httpx.Client, *ids: str) -> None:
    for sid in ids:
        api.post("/api/stations", json={"station_id": sid, "name": sid.upper()}).raise_for_status()


def test_a_deletion_shows_which_stations_confirmed_it(api: httpx.Client, mosquitto: Mosquitto) -> None:
    rng = np.random.default_rng(21)
    _register(api, "a1", "a2", "a3", "a4")
    worker = api.post("/api/workers/encodings", json={"name": "Gone", "encodings": random_encodings(rng)}).json()
    deleted = api.delete(f"/api/workers/{worker['worker_id']}").json()["version"]
    later = api.post("/api/workers/encodings", json={"name": "Later", "encodings": random_encodings(rng)}).json()

    before = api.get(f"/api/changes/{deleted}").json()
    assert (before["op"], before["confirmed"], before["total"]) == ("delete", 0, 4)
    assert before["summary"] == "delete confirmed by 0 of 4 stations"
    with mqtt_link(mosquitto) as link:
        # a1 and a2 hold the deletion exactly, a3 is past it; a4 still holds only the enrollment.
        acks = {"a1": deleted, "a2": deleted, "a3": later["version"], "a4": worker["version"]}
        for sid, version in acks.items():
            link.publish(topics.sync_ack(sid), encode(SyncAck(station_id=sid, version=version)))
        wait_until(lambda: api.get(f"/api/changes/{deleted}").json()["stations"][3]["acked_version"] > 0, what="acks")
    after = api.get(f"/api/changes/{deleted}").json()
    assert after["summary"] == "delete confirmed by 3 of 4 stations"
    by_station = {s["station_id"]: s for s in after["stations"]}
    assert {sid: s["confirmed"] for sid, s in by_station.items()} == {"a1": True, "a2": True, "a3": True, "a4": False}
    assert all(s["acked_at"] is not None for s in by_station.values())
    # The same view from the worker's side, even though the worker is gone from the server.
    assert api.get(f"/api/workers/{worker['worker_id']}/sync").json() == after
    enrolled = api.get(f"/api/workers/{later['worker_id']}/sync").json()
    assert (enrolled["op"], enrolled["confirmed"]) == ("upsert", 1)
    assert api.get("/api/changes/999999").status_code == 404
    assert api.get("/api/workers/nobody/sync").status_code == 404


def test_validity_window_and_station_list_reach_the_stations(
    api: httpx.Client, station: str, mosquitto: Mosquitto
) -> None:
    rng = np.random.default_rng(22)
    worker = api.post("/api/workers/encodings", json={"name": "Seasonal", "encodings": random_encodings(rng)}).json()
    wid = worker["worker_id"]
    body = {"valid_from": "2026-03-01T00:00:00+08:00", "valid_until": "2026-10-01T00:00:00+08:00",
            "stations": [station, "s9-not-yet-registered"]}
    with mqtt_link(mosquitto) as link:
        live = Inbox(link, topics.GALLERY_CHANGE)
        reply_inbox = Inbox(link, topics.sync_reply(station))
        changed = api.put(f"/api/workers/{wid}/access", json=body)
        assert changed.status_code == 200, changed.text
        version = changed.json()["version"]
        assert version > worker["version"]
        wire = live.get()
        assert json.loads(wire)["schema"] == "gallery_change/2"  # only messages that need version 2 use it
        change = decode(wire, GalleryChangeMessage).change
        assert change.version == version and change.stations == (station, "s9-not-yet-registered")
        assert change.valid_from == datetime(2026, 3, 1, tzinfo=timezone(timedelta(hours=8)))
        assert change.valid_until == datetime(2026, 10, 1, tzinfo=timezone(timedelta(hours=8)))

        (reply,) = _sync(link, reply_inbox, station, since=0)
        (synced,) = reply.changes
        assert synced == change and reply.server_time is not None
        assert abs((reply.server_time - datetime.now(timezone.utc)).total_seconds()) < 5

        # Lifting every limit is a change too; it goes out as version 1 again.
        cleared = api.put(f"/api/workers/{wid}/access", json={})
        assert cleared.status_code == 200 and cleared.json()["stations"] is None
        assert json.loads(live.get())["schema"] == "gallery_change/1"

    bad = [
        {"valid_from": "2026-10-01T00:00:00Z", "valid_until": "2026-03-01T00:00:00Z"},
        {"valid_from": "2026-10-01T00:00:00"},  # no offset
        {"stations": ["Not A Station"]},
        {"stations": None, "extra": 1},
    ]
    for payload in bad:
        assert api.put(f"/api/workers/{wid}/access", json=payload).status_code == 422, payload
    assert api.put("/api/workers/nobody/access", json={}).status_code == 404
