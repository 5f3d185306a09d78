"""A station's sync request over real mosquitto: paged replies cover every change, snapshots, acks."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from core.mqtt import MqttLink
from models import topics
from models.messages import GalleryOp, SyncAck, SyncReply, SyncRequest, decode, encode
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
