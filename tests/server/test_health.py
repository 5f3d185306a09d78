"""/healthz and /metrics of the real server over real HTTP, fed by a real mosquitto.

What a monitoring system sees: the health check turning 503 when the broker goes
away (and back), without leaking secrets; metrics that count the entries really
ingested over MQTT, the stations a status message brought online, the gallery
changes stations have not confirmed; and a scrape refused without a token.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from models import topics
from models.messages import Decision, EntryEvent, StationStatus, SyncAck, encode
from server.api import create_app
from server.config import ServerSettings
from server.db import make_engine
from server.runtime import ServerRuntime
from server.tables import utcnow
from tests.support.services import Mosquitto

from .conftest import TOKEN, make_settings, mqtt_link, publish_acked, random_encodings, start_server, wait_until

pytestmark = pytest.mark.broker

METRICS_TOKEN = "metrics-only-token-0123456789"


def scrape(base_url: str, token: str = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics as {(name, sorted labels): value}, parsed by prometheus_client's own parser."""
    r = httpx.get(base_url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples[(name, tuple(sorted(labels.items())))]


def test_healthz_turns_503_when_the_broker_goes_and_200_when_it_is_back(
    server: ServerRuntime, mosquitto: Mosquitto
) -> None:
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:  # no token: none needed
        r = client.get("/healthz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok", "database": "ok", "broker": "connected", "problems": []}

        mosquitto.stop()
        wait_until(lambda: client.get("/healthz").status_code == 503, 15, "/healthz to report the broker gone")
        body = client.get("/healthz").json()
        assert body["status"] == "degraded" and body["database"] == "ok" and body["broker"] == "disconnected"
        assert any("MQTT broker" in p for p in body["problems"])

        mosquitto.start()
        wait_until(lambda: client.get("/healthz").status_code == 200, 45, "/healthz to recover with the broker")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """An app on uvicorn, on 127.0.0.1 and a port the system picks; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_database_down_is_503_and_names_no_secret(tmp_path) -> None:  # noqa: ANN001
    """A PostgreSQL URL with a password, on a port nothing listens on: unavailable, and the password stays hidden."""
    with socket.socket() as probe:  # a port that was free a moment ago: connecting is refused
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    url = f"postgresql+psycopg://waystation:s3cret-pw@127.0.0.1:{dead_port}/waystation?connect_timeout=2"
    settings = ServerSettings(data_dir=tmp_path, api_token=TOKEN, database_url=url)
    engine = make_engine(url)
    try:
        with serve(create_app(settings, engine=engine)) as url_base:
            r = httpx.get(url_base + "/healthz", timeout=10, trust_env=False)
            assert r.status_code == 503
            body = r.json()
            assert body["database"] == "unavailable" and body["broker"] == "not started"
            assert len(body["problems"]) == 2
            assert "s3cret" not in r.text and str(dead_port) not in r.text and TOKEN not in r.text
            samples = scrape(url_base)
            assert value(samples, "waystation_database_up") == 0
            assert "s3cret" not in str(samples)
    finally:
        engine.dispose()


def test_metrics_need_a_token_and_the_metrics_token_opens_nothing_else(tmp_path, mosquitto: Mosquitto) -> None:  # noqa: ANN001
    settings = make_settings(tmp_path, mosquitto, metrics_token=METRICS_TOKEN)
    with ServerRuntime(settings) as server, httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "waystation_" not in refused.text
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"}).status_code == 401
        assert "waystation_stations_registered" in str(scrape(server.url, METRICS_TOKEN))
        assert "waystation_stations_registered" in str(scrape(server.url, TOKEN))  # the API token works too
        # The metrics token is for /metrics only.
        assert client.get("/api/stations", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401


def test_metrics_follow_what_arrives_over_mqtt(
    server: ServerRuntime, api: httpx.Client, station: str, mosquitto: Mosquitto
) -> None:
    assert server.ingest is not None
    before = scrape(server.url)
    assert value(before, "waystation_ingest_entries_total", outcome="stored") == 0
    assert value(before, "waystation_stations_registered") == 1
    assert value(before, "waystation_stations_online") == 0
    assert value(before, "waystation_station_online", station=station) == 0
    assert value(before, "waystation_mqtt_connected") == 1

    # Five entries decided two minutes ago (they waited in the station's outbox), one of them sent
    # twice (a redelivery), and a payload that is not an entry at all.
    occurred = utcnow() - timedelta(minutes=2)
    events = [EntryEvent(station_id=station, decision=Decision.DENIED, occurred_at=occurred) for _ in range(5)]
    messages = [(topics.entry(station), encode(e)) for e in events]
    messages += [(topics.entry(station), encode(events[0])), (topics.entry(station), b'{"schema": "entry/1"')]
    with mqtt_link(mosquitto) as link:
        publish_acked(link, messages)
        wait_until(lambda: server.ingest.counters["stored"] == 5 and server.ingest.counters["duplicates"] == 1
                   and server.ingest.counters["rejected_malformed"] == 1, 20, "the entries to be ingested")
        after = scrape(server.url)
        assert value(after, "waystation_ingest_entries_total", outcome="stored") == 5
        assert value(after, "waystation_ingest_entries_total", outcome="duplicate") == 1
        assert value(after, "waystation_ingest_rejected_total", reason="malformed") == 1
        # The lag: received minus occurred, once per stored event (not for the duplicate).
        assert value(after, "waystation_event_lag_seconds_count") == 5
        assert value(after, "waystation_event_lag_seconds_sum") == pytest.approx(5 * 120, abs=5 * 30)
        assert value(after, "waystation_event_lag_seconds_bucket", le="60.0") == 0
        assert value(after, "waystation_event_lag_seconds_bucket", le="300.0") == 5

        # The station says it is online: the gauge follows the stations table, as the admin pages do.
        publish_acked(link, [(topics.status(station), encode(StationStatus(station_id=station, online=True)))])
        wait_until(lambda: value(scrape(server.url), "waystation_stations_online") == 1, 10, "the station online")
        online = scrape(server.url)
        assert value(online, "waystation_station_online", station=station) == 1
        assert value(online, "waystation_stations_heartbeat_late") == 0

        # A worker enrolled: one gallery change the station has not confirmed yet.
        body = {"name": "Li Wei", "encodings": random_encodings(np.random.default_rng(8), 1)}
        version = api.post("/api/workers/encodings", json=body).raise_for_status().json()["version"]
        pending = scrape(server.url)
        assert value(pending, "waystation_gallery_version") == version
        assert value(pending, "waystation_sync_confirmations_pending") == version  # every change since 0
        assert value(pending, "waystation_station_changes_pending", station=station) == version
        assert value(pending, "waystation_stations_behind") == 1

        publish_acked(link, [(topics.sync_ack(station), encode(SyncAck(station_id=station, version=version)))])
        wait_until(lambda: value(scrape(server.url), "waystation_sync_confirmations_pending") == 0, 10,
                   "the confirmation to count")
        assert value(scrape(server.url), "waystation_stations_behind") == 0

        publish_acked(link, [(topics.status(station), encode(StationStatus(station_id=station, online=False)))])
        wait_until(lambda: value(scrape(server.url), "waystation_stations_online") == 0, 10, "the station offline")


def test_two_apps_in_one_process_keep_their_own_metrics(tmp_path, mosquitto: Mosquitto) -> None:  # noqa: ANN001
    """Each app has its own registry: a second server neither fails to start nor sees the first one's entries."""
    first = start_server(make_settings(tmp_path / "a", mosquitto), mosquitto)
    second = start_server(make_settings(tmp_path / "b", mosquitto, mqtt_client_id=f"ws-{uuid.uuid4().hex[:8]}"),
                          mosquitto)
    try:
        with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False) as api:
            api.post("/api/stations", json={"station_id": "s-a", "name": "A"}).raise_for_status()
        with mqtt_link(mosquitto) as link:
            publish_acked(link, [(topics.entry("s-a"), encode(EntryEvent(station_id="s-a", decision=Decision.DENIED)))])
        assert first.ingest is not None
        wait_until(lambda: first.ingest.counters["stored"] == 1, 10, "the entry stored by the first server")
        time.sleep(0.3)
        assert value(scrape(first.url), "waystation_event_lag_seconds_count") == 1
        assert value(scrape(second.url), "waystation_event_lag_seconds_count") == 0
        assert value(scrape(second.url), "waystation_stations_registered") == 0
    finally:
        first.stop()
        second.stop()
