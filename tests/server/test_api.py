"""The HTTP API over real HTTP: token checks, stations, workers from encodings, errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from models import topics
from models.messages import Decision, EntryEvent, GalleryChangeMessage, GalleryOp, decode, encode
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto

from .conftest import TOKEN, Inbox, mqtt_link, random_encodings, wait_until

pytestmark = pytest.mark.broker

PROTECTED = [
    ("GET", "/api/stations"),
    ("POST", "/api/stations"),
    ("GET", "/api/workers"),
    ("POST", "/api/workers"),
    ("POST", "/api/workers/encodings"),
    ("DELETE", "/api/workers/abc"),
    ("POST", "/api/workers/abc/suspend"),
    ("POST", "/api/workers/abc/reinstate"),
    ("GET", "/api/entries"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "prefix", "basic", "no-scheme"],
)
def test_every_api_route_needs_the_token(server: ServerRuntime, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for method, path in PROTECTED:
            r = client.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in r.json()["detail"]
    # Nothing was created by the refused requests.
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get("/api/stations").json() == {"items": []}


def test_health_needs_no_token_and_reports_mqtt(server: ServerRuntime) -> None:
    r = httpx.get(server.url + "/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "mqtt_connected": True}


def test_health_reports_broker_loss(server: ServerRuntime, mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    wait_until(lambda: httpx.get(server.url + "/api/health").json()["mqtt_connected"] is False, what="mqtt down")
    mosquitto.start()
    wait_until(lambda: httpx.get(server.url + "/api/health").json()["mqtt_connected"] is True, 30, "reconnect")


def test_register_and_list_stations(api: httpx.Client) -> None:
    r = api.post("/api/stations", json={"station_id": "north-7", "name": "  North gate  "})
    assert r.status_code == 201
    body = r.json()
    assert body["station_id"] == "north-7" and body["name"] == "North gate"
    assert body["online"] is False and body["gallery_version_acked"] == 0
    assert api.post("/api/stations", json={"station_id": "north-7", "name": "Again"}).status_code == 409
    assert [s["station_id"] for s in api.get("/api/stations").json()["items"]] == ["north-7"]


@pytest.mark.parametrize("station_id", ["North", "a/b", "x+", "#", "", "a" * 64])
def test_invalid_station_id_is_refused(api: httpx.Client, station_id: str) -> None:
    r = api.post("/api/stations", json={"station_id": station_id, "name": "Bad"})
    assert r.status_code == 422
    assert api.get("/api/stations").json()["items"] == []


def test_enroll_from_encodings_broadcasts_and_lists(api: httpx.Client, mosquitto: Mosquitto) -> None:
    rng = np.random.default_rng(3)
    encodings = random_encodings(rng, 3)
    with mqtt_link(mosquitto) as observer:
        inbox = Inbox(observer, topics.GALLERY_CHANGE)
        body = {"name": "Li Wei", "phone": "+86 139 1234 5678", "encodings": encodings}
        r = api.post("/api/workers/encodings", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["samples"] == 3 and created["version"] >= 1
        msg = decode(inbox.get(), GalleryChangeMessage)
    assert msg.change.worker_id == created["worker_id"]
    assert msg.change.version == created["version"]
    assert msg.change.op is GalleryOp.UPSERT and msg.change.active is True
    assert [e.data for e in msg.change.encodings] == [e["data"] for e in encodings]
    (listed,) = api.get("/api/workers").json()["items"]
    assert listed["name"] == "Li Wei" and listed["samples"] == 3 and listed["status"] == "active"
    dup = api.post("/api/workers/encodings", json={**body, "name": "Other"})
    assert dup.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"name": "X", "encodings": [{"model": "facenet/v2", "data": "A" * 684}]},
        {"name": "X", "encodings": []},
        {"name": "", "encodings": "ENC"},
        {"name": "X" * 101, "encodings": "ENC"},
        {"name": "X", "phone": "call me", "encodings": "ENC"},
        {"name": "X", "encodings": [{"model": "dlib_resnet_v1/sp5", "data": "not base64"}]},
        {"name": "X", "encodings": "ENC", "admin": True},
    ],
    ids=["other-model", "no-encodings", "empty-name", "long-name", "bad-phone", "bad-data", "extra-field"],
)
def test_bad_encoding_enrollments_are_refused(api: httpx.Client, body: dict[str, object]) -> None:
    if body["encodings"] == "ENC":
        body = {**body, "encodings": random_encodings(np.random.default_rng(0), 1)}
    r = api.post("/api/workers/encodings", json=body)
    assert r.status_code == 422, r.text
    assert api.get("/api/workers").json()["items"] == []


def test_suspend_reinstate_delete(api: httpx.Client, mosquitto: Mosquitto) -> None:
    rng = np.random.default_rng(4)
    worker = api.post("/api/workers/encodings", json={"name": "Mo", "encodings": random_encodings(rng)}).json()
    wid = worker["worker_id"]
    with mqtt_link(mosquitto) as observer:
        inbox = Inbox(observer, topics.GALLERY_CHANGE)
        suspended = api.post(f"/api/workers/{wid}/suspend").json()
        c1 = decode(inbox.get(), GalleryChangeMessage).change
        reinstated = api.post(f"/api/workers/{wid}/reinstate").json()
        c2 = decode(inbox.get(), GalleryChangeMessage).change
        deleted = api.delete(f"/api/workers/{wid}")
        c3 = decode(inbox.get(), GalleryChangeMessage).change
    assert suspended["status"] == "suspended" and c1.active is False and len(c1.encodings) == 1
    assert reinstated["status"] == "active" and c2.active is True
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    assert (c3.op, c3.worker_id, c3.encodings) == (GalleryOp.DELETE, wid, ())
    assert worker["version"] < c1.version < c2.version < c3.version == deleted.json()["version"]
    assert api.get("/api/workers").json()["items"] == []
    for method, path in [("DELETE", f"/api/workers/{wid}"), ("POST", f"/api/workers/{wid}/suspend")]:
        r = api.request(method, path)
        assert r.status_code == 404 and wid in r.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"cursor": "garbage"}, {"cursor": "W10"}, {"since": "2025-01-01T00:00:00"}],
    ids=["limit-0", "limit-1001", "cursor-garbage", "cursor-list", "naive-since"],
)
def test_bad_entry_queries_are_422(api: httpx.Client, params: dict[str, object]) -> None:
    r = api.get("/api/entries", params=params)
    assert r.status_code == 422, r.text


def test_concurrent_enrollments_get_distinct_versions_while_entries_pour_in(
    server: ServerRuntime, api: httpx.Client, station: str, mosquitto: Mosquitto
) -> None:
    """API writes (threadpool) and ingest writes (MQTT thread) share one SQLite file without losing either."""
    assert server.ingest is not None
    rng = np.random.default_rng(9)
    bodies = [{"name": f"Parallel {i}", "encodings": random_encodings(rng, 2)} for i in range(24)]
    events = [EntryEvent(station_id=station, decision=Decision.GRANTED) for _ in range(150)]
    with mqtt_link(mosquitto) as link, ThreadPoolExecutor(max_workers=8) as pool:
        for event in events:
            link.publish(topics.entry(station), encode(event))
        results = list(pool.map(lambda b: api.post("/api/workers/encodings", json=b), bodies))
        wait_until(lambda: server.ingest.counters["stored"] == len(events), 30, "all entries stored")
    assert [r.status_code for r in results] == [201] * len(bodies)
    versions = [r.json()["version"] for r in results]
    assert len(set(versions)) == len(versions)
    assert sorted(versions) == list(range(1, len(bodies) + 1))
    assert len(api.get("/api/workers").json()["items"]) == len(bodies)
    assert server.ingest.counters["errors"] == 0
