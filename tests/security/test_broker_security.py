"""Transport security against Debian's mosquitto: TLS, per-station passwords and the deploy/ ACL.

Stations are provisioned with the real command (``python -m server
provision``), the broker runs with deploy/mosquitto/acl unchanged, and a
privileged subscriber (the server's user) checks that a denied publish really
went nowhere: MQTT 3.1.1 gives the publisher no error for it.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from core.broker import free_port
from core.mqtt import MqttLink, MqttSettings
from edge.config import EdgeSettings
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models import topics
from models.encoding import FaceEncoding
from models.messages import Decision, EntryEvent, StationStatus, SyncAck, SyncRequest, encode
from server.config import ServerSettings
from server.runtime import ServerRuntime
from server.tables import Entry
from tests.support.services import Mosquitto, Pki, make_pki, wait_port

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto" / "acl"
SERVER_USER = "waystation.server"
TOKEN = "security-test-token-0123456789"


@dataclass
class Broker:
    mosquitto: Mosquitto
    pki: Pki
    password_file: Path
    server_password: str
    stations: dict[str, Path]  # station id -> folder written by `provision`
    server_env: dict[str, str]

    def station_password(self, station: str) -> str:
        text = (self.stations[station] / "station.env").read_text()
        match = re.search(r"^WAYSTATION_EDGE_MQTT__PASSWORD=(.+)$", text, re.M)
        assert match
        return match.group(1)

    def link(self, user: str | None, password: str | None, *, ca: Path | None = None, client_id: str | None = None,
             tls: bool = True) -> MqttLink:
        return MqttLink(MqttSettings(
            port=self.mosquitto.port, username=user, password=password, clean_start=True,
            client_id=client_id or f"sec-{uuid.uuid4().hex[:8]}",
            tls_ca=str(ca or self.pki.ca_cert) if tls else None,
        ))


def provision(folder: Path, station: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "provision", station, "--out", str(folder), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("secure")
    pki = make_pki(root / "pki")
    password_file = root / "passwd"
    server_password = uuid.uuid4().hex
    password_file.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", str(password_file), SERVER_USER], input=f"{server_password}\n" * 2,
                   text=True, check=True, capture_output=True)
    mosquitto = Mosquitto.secure(root / "broker", pki, password_file=password_file, acl_file=ACL)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "WAYSTATION_SERVER_API_TOKEN": TOKEN,
        "WAYSTATION_SERVER_DATA_DIR": str(root / "server"),
        "WAYSTATION_SERVER_MQTT_PASSWORD_FILE": str(password_file),
        "WAYSTATION_SERVER_MQTT_TLS_CA": str(pki.ca_cert),
        "WAYSTATION_SERVER_STATION_MQTT_HOST": "127.0.0.1",
        "WAYSTATION_SERVER_STATION_MQTT_PORT": str(mosquitto.port),
    }
    stations = {}
    for sid in ("st-a", "st-b"):
        result = provision(root / sid, sid, env, "--data-dir", str(root / sid / "data"))
        assert result.returncode == 0, result.stderr
        stations[sid] = root / sid
    mosquitto.start()
    yield Broker(mosquitto, pki, password_file, server_password, stations, env)
    mosquitto.stop()


def _connected(link: MqttLink, timeout: float = 10) -> MqttLink:
    link.start()
    assert link.wait_connected(timeout), link.refused_reason
    return link


class Listener:
    """A subscriber that records what reaches it; the subscription is confirmed live by a probe it may read."""

    def __init__(self, link: MqttLink, *filters: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        for f in filters:
            link.subscribe(f, lambda t, p: self.got.put((t, p)))

    def drain(self, wait: float = 0.0) -> list[tuple[str, bytes]]:
        time.sleep(wait)
        out = []
        while not self.got.empty():
            out.append(self.got.get())
        return out


def test_provisioning_writes_private_credentials_and_a_valid_config(broker: Broker) -> None:
    folder = broker.stations["st-a"]
    config = yaml.safe_load((folder / "station.yaml").read_text())
    password = broker.station_password("st-a")
    assert config["station_id"] == "st-a" and config["mqtt"]["username"] == "st-a"
    assert config["mqtt"]["port"] == broker.mosquitto.port and Path(config["mqtt"]["tls_ca"]).read_bytes() == \
        broker.pki.ca_cert.read_bytes()
    assert password not in (folder / "station.yaml").read_text()  # the secret is only in station.env
    assert len(password) >= 32
    assert (folder / "station.env").stat().st_mode & 0o077 == 0
    assert broker.password_file.stat().st_mode & 0o077 == 0
    users = [line.split(":")[0] for line in broker.password_file.read_text().splitlines()]
    assert users == [SERVER_USER, "st-a", "st-b"]
    assert password not in broker.password_file.read_text()  # hashed
    assert broker.station_password("st-b") != password
    # A second provisioning of the same station is refused unless asked to rotate.
    again = provision(folder / "again", "st-a", broker.server_env)
    assert again.returncode == 1 and "already registered" in again.stderr and "--rotate" in again.stderr
    bad = provision(folder / "bad", "Not/A/Station", broker.server_env)
    assert bad.returncode == 1 and "station id" in bad.stderr


def test_wrong_credentials_are_refused(broker: Broker, tmp_path: Path) -> None:
    good = broker.station_password("st-a")
    other_ca = make_pki(tmp_path / "other", name="Some other CA")
    attempts = {
        "wrong password": broker.link("st-a", good[:-1] + ("x" if good[-1] != "x" else "y")),
        "another station's password": broker.link("st-a", broker.station_password("st-b")),
        "unknown user": broker.link("st-z", good),
        "no credentials": broker.link(None, None),
    }
    try:
        for link in attempts.values():
            link.start()
        time.sleep(2.0)
        for what, link in attempts.items():
            assert not link.connected, what
            assert link.refused_reason is not None, what
            assert re.search(r"not authori[sz]ed|bad user name or password", link.refused_reason, re.I), what
    finally:
        for link in attempts.values():
            link.stop()
    # Without TLS, or trusting another CA, there is no connection at all.
    for link in (broker.link("st-a", good, tls=False), broker.link("st-a", good, ca=other_ca.ca_cert)):
        try:
            link.start()
            assert not link.wait_connected(2.0)
        finally:
            link.stop()
    # The right credentials work (so the refusals above were about the credentials).
    ok = _connected(broker.link("st-a", good))
    ok.stop()


def test_a_station_cannot_read_other_stations_messages(broker: Broker) -> None:
    server = _connected(broker.link(SERVER_USER, broker.server_password))
    spy = _connected(broker.link("st-a", broker.station_password("st-a")))
    victim = _connected(broker.link("st-b", broker.station_password("st-b")))
    try:
        watched = Listener(server, topics.ALL_ENTRIES, topics.ALL_STATUS, topics.ALL_SYNC_REQUESTS)
        snooped = Listener(spy, "#", "ws/v1/station/+/entry", topics.entry("st-b"), topics.status("st-b"),
                           topics.sync_reply("st-b"))
        time.sleep(0.5)
        event = encode(EntryEvent(station_id="st-b", decision=Decision.GRANTED, worker_id="w-b"))
        for topic, payload in [
            (topics.entry("st-b"), event),
            (topics.status("st-b"), encode(StationStatus(station_id="st-b", online=True))),
            (topics.sync_request("st-b"), encode(SyncRequest(station_id="st-b", since_version=0))),
        ]:
            assert victim.publish(topic, payload)
        # The server does see them ...
        deadline = time.monotonic() + 10
        seen: list[tuple[str, bytes]] = []
        while len(seen) < 3 and time.monotonic() < deadline:
            seen += watched.drain(0.1)
        assert sorted(t for t, _ in seen) == sorted([topics.entry("st-b"), topics.status("st-b"),
                                                     topics.sync_request("st-b")])
        # ... and a sync reply meant for st-b, published by the server, reaches st-b only.
        mine = Listener(victim, topics.sync_reply("st-b"))
        time.sleep(0.3)
        assert server.publish(topics.sync_reply("st-b"), b'{"for": "st-b only"}')
        deadline = time.monotonic() + 10
        while mine.got.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not mine.got.empty()
        assert snooped.drain(0.5) == []  # not one message of st-b reached st-a
    finally:
        for link in (server, spy, victim):
            link.stop()


def test_a_station_cannot_publish_as_another_station_or_as_the_server(broker: Broker) -> None:
    server = _connected(broker.link(SERVER_USER, broker.server_password))
    forger = _connected(broker.link("st-a", broker.station_password("st-a")))
    victim = _connected(broker.link("st-b", broker.station_password("st-b")))
    try:
        at_server = Listener(server, topics.ALL_ENTRIES, topics.ALL_STATUS, topics.ALL_SYNC_REQUESTS,
                             topics.ALL_SYNC_ACKS)
        at_victim = Listener(victim, topics.GALLERY_CHANGE, topics.sync_reply("st-b"))
        time.sleep(0.5)
        forged = [
            (topics.entry("st-b"), encode(EntryEvent(station_id="st-b", decision=Decision.GRANTED, worker_id="x"))),
            (topics.status("st-b"), encode(StationStatus(station_id="st-b", online=False))),
            (topics.sync_ack("st-b"), encode(SyncAck(station_id="st-b", version=999))),
            (topics.sync_request("st-b"), encode(SyncRequest(station_id="st-b", since_version=0))),
            (topics.GALLERY_CHANGE, b'{"forged": "gallery change"}'),
            (topics.sync_reply("st-b"), b'{"forged": "sync reply"}'),
            ("ws/v1/station/st-b/entry/extra", b"x"),
        ]
        for topic, payload in forged:
            forger.publish(topic, payload)  # accepted by the client library; the broker drops each one
        # Then messages the forger may send: they arrive, so the forged ones before them would have too.
        own = encode(EntryEvent(station_id="st-a", decision=Decision.DENIED))
        assert forger.publish(topics.entry("st-a"), own)
        deadline = time.monotonic() + 10
        got: list[tuple[str, bytes]] = []
        while not any(t == topics.entry("st-a") for t, _ in got) and time.monotonic() < deadline:
            got += at_server.drain(0.05)
        assert got == [(topics.entry("st-a"), own)]
        assert at_server.drain(0.5) == []
        assert at_victim.drain(0.5) == []
        # The gallery broadcast itself works (from the server), so the silence above is the ACL's doing.
        assert server.publish(topics.GALLERY_CHANGE, b'{"real": true}')
        deadline = time.monotonic() + 10
        while at_victim.got.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert at_victim.drain() == [(topics.GALLERY_CHANGE, b'{"real": true}')]
    finally:
        for link in (server, forger, victim):
            link.stop()


def test_a_provisioned_station_syncs_and_reports_over_tls(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provisioned files as they are, the server as its own user: the whole path works under the ACL."""
    settings = ServerSettings(
        api_token=TOKEN, data_dir=Path(broker.server_env["WAYSTATION_SERVER_DATA_DIR"]), http_port=free_port(),
        mqtt_port=broker.mosquitto.port, mqtt_username=SERVER_USER, mqtt_password=broker.server_password,
        mqtt_tls_ca=broker.pki.ca_cert, mqtt_client_id="secure-server",
    )
    monkeypatch.setenv("WAYSTATION_EDGE_MQTT__PASSWORD", broker.station_password("st-a"))
    edge = EdgeSettings.load(broker.stations["st-a"] / "station.yaml")
    vector = np.random.default_rng(5).normal(size=128).astype(np.float32) * 0.05
    with ServerRuntime(settings) as server, httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as api:
        assert server.ingest is not None and server.ingest.wait_connected(10)
        enrolled = api.post("/api/workers/encodings", json={
            "name": "Over TLS", "encodings": [FaceEncoding.from_vector(vector).model_dump()]}).json()
        store = EdgeStore.open(edge.data_dir)
        sync = StationSync(edge, store, build_link(edge))
        try:
            sync.start()
            assert sync.holder.wait_for(lambda g: enrolled["worker_id"] in g.identities, 20)
            event = EntryEvent(station_id="st-a", decision=Decision.GRANTED, worker_id=enrolled["worker_id"])
            assert sync.enqueue(event)
            deadline = time.monotonic() + 20
            stored: list[str] = []
            while str(event.event_id) not in stored and time.monotonic() < deadline:
                assert server.engine is not None
                with server.engine.connect() as conn:
                    stored = list(conn.execute(sa.select(Entry.event_id)).scalars())
                time.sleep(0.1)
            assert str(event.event_id) in stored
            sync_state = api.get(f"/api/workers/{enrolled['worker_id']}/sync").json()
            deadline = time.monotonic() + 10
            while sync_state["confirmed"] < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
                sync_state = api.get(f"/api/workers/{enrolled['worker_id']}/sync").json()
            assert {s["station_id"]: s["confirmed"] for s in sync_state["stations"]} == {"st-a": True, "st-b": False}
            assert server.ingest.counters["rejected_unknown_station"] == 0 and server.ingest.counters["errors"] == 0
        finally:
            sync.stop()
            store.close()


def test_the_deploy_config_is_accepted_by_mosquitto(tmp_path: Path, broker: Broker) -> None:
    """deploy/mosquitto/mosquitto.conf with only its paths and ports changed: it starts and enforces TLS + auth."""
    text = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    tls_port, plain_port = free_port(), free_port()
    files = {"ca.crt": broker.pki.ca_cert, "server.crt": broker.pki.server_cert, "server.key": broker.pki.server_key,
             "passwd": broker.password_file, "acl": ACL}
    for name, path in files.items():
        text = text.replace(f"/etc/mosquitto/waystation/{name}", str(path))
    (tmp_path / "persist").mkdir()
    text = text.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    text = text.replace("listener 1883 127.0.0.1", f"listener {plain_port} 127.0.0.1")
    # Debian's main mosquitto.conf sets persistence_location; ours must not repeat it (mosquitto
    # refuses a duplicate), so this stand-alone run sets it, or the broker would write into the cwd.
    assert "persistence_location" not in text
    text += f"\npersistence_location {tmp_path}/persist/\n"
    settings_lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in settings_lines if "/etc/" in line or "/var/" in line]
    user = "user root\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(user + text + f"log_dest file {tmp_path / 'log'}\n")
    proc = subprocess.Popen([broker.mosquitto.exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert wait_port("127.0.0.1", tls_port) and wait_port("127.0.0.1", plain_port), proc.stderr
        link = MqttLink(MqttSettings(port=tls_port, username="st-a", password=broker.station_password("st-a"),
                                     tls_ca=str(broker.pki.ca_cert), client_id="deploy-check", clean_start=True))
        anonymous = MqttLink(MqttSettings(port=plain_port, client_id="deploy-anon", clean_start=True))
        try:
            _connected(link)
            anonymous.start()
            assert not anonymous.wait_connected(2.0) and anonymous.refused_reason is not None
        finally:
            link.stop()
            anonymous.stop()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
