"""The server publishes each station's mode and opening hours, retained, and shows what the station applied.

The version is a column bumped with each change (migration 0008); the stations'
answers are stored in the database by whichever ingest process receives them.

A real server (SQLite file, uvicorn, MQTT ingest) on Debian's mosquitto; the
admin changes settings through the real stations page over HTTP (session
cookie and CSRF token as a browser sends them); a plain MQTT client plays the
station. The broker ACL of deploy/ lets each station read only its own config.
"""

from __future__ import annotations

import html
import queue
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from core.mqtt import MqttLink, MqttSettings
from models import topics
from models.messages import StationStatus, decode, encode
from models.station_config import StationConfig, StationConfigAck
from server import users
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.ingest_worker import IngestWorker
from server.runtime import ServerRuntime
from server.station_config import ConfigState, record_config_ack
from server.stations import register_station
from server.tables import Station, User
from tests.support.browser import API_TOKEN, WebApp, create_users, web_settings
from tests.support.services import Mosquitto, need, postgres_url, wait_for  # noqa: F401 - postgres_url: a fixture

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto" / "acl"
SID = "rest-east"


class Listener:
    """An MQTT client recording what arrives on some topics (retained copies included)."""

    def __init__(self, host: str, port: int, *filters: str, user: str | None = None, password: str | None = None,
                 ) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.link = MqttLink(MqttSettings(host=host, port=port, username=user, password=password, clean_start=True,
                                          client_id=f"listen-{uuid.uuid4().hex[:8]}"))
        for f in filters:
            self.link.subscribe(f, lambda t, p: self.got.put((t, p)))

    def __enter__(self) -> "Listener":
        self.link.start()
        assert self.link.wait_connected(10), self.link.refused_reason
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def next_config(self, timeout: float = 10.0) -> StationConfig:
        topic, payload = self.got.get(timeout=timeout)
        assert topic == topics.station_config(SID)
        return decode(payload, StationConfig)

    def drain(self, wait: float) -> list[tuple[str, bytes]]:
        time.sleep(wait)
        out = []
        while not self.got.empty():
            out.append(self.got.get())
        return out


def admin_client(web: WebApp) -> tuple[httpx.Client, str]:
    with web.sessions() as s:
        user = s.query(User).filter_by(username="admin").one()
        token = users.start_session(s, user=user, hours=1, remote_addr="127.0.0.1")
        found = users.session_user(s, token)
        assert found is not None
        csrf = found[1].csrf_token
    return httpx.Client(base_url=web.url, cookies={"ws_session": token}, trust_env=False, timeout=30), csrf


def edit(client: httpx.Client, csrf: str, **fields: str) -> None:
    form = {"name": "Rest east", "place": "", "time_zone": "Asia/Shanghai", "opening_hours": "24h",
            "mode": "face_or_qr", "csrf_token": csrf, **fields}
    r = client.post(f"/stations/{SID}", data=form)
    assert r.status_code == 303, r.text[:500]


def config_cell(client: httpx.Client) -> tuple[str, str]:
    """(data-state, text) of the station page's "Mode and opening hours" cell."""
    page = client.get(f"/stations/{SID}").raise_for_status().text
    found = re.search(r'<td id="config" data-version="\d+" data-state="(\w+)">(.*?)</td>', page, re.S)
    assert found, page[:2000]
    return found.group(1), " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(2))).split())


def stored(web: WebApp) -> Station:
    with web.sessions() as session:
        station = session.get(Station, SID)
        assert station is not None
        return station


def test_changes_reach_the_broker_retained_and_the_page_shows_what_the_station_did(
    web: WebApp, mosquitto: Mosquitto
) -> None:
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, trust_env=False)
    admin, csrf = admin_client(web)
    ingest = web.runtime.ingest
    assert ingest is not None and ingest.wait_connected(10)
    with api, admin:
        api.post("/api/stations", json={"station_id": SID, "name": "Rest east"}).raise_for_status()
        # A station connecting later finds its config waiting (retained): the defaults, version 0.
        with Listener(mosquitto.host, mosquitto.port, topics.station_config(SID)) as station:
            first = station.next_config()
            assert (first.version, first.mode, first.opening_hours, first.time_zone) == (
                0, "face_or_qr", "24h", "Asia/Shanghai")
            assert config_cell(admin) == ("pending", "v0 pending no answer from the station yet")

            edit(admin, csrf, mode="qr", opening_hours="06:00 - 22:00")
            changed = station.next_config()
            assert (changed.version, changed.mode, changed.opening_hours) == (1, "qr", "06:00-22:00")
            edit(admin, csrf, name="Rest east (renamed)", mode="qr", opening_hours="06:00-22:00")
            assert station.drain(1.0) == []  # a new name is no new config
            assert stored(web).config_version == 1
            edit(admin, csrf, name="Rest east (renamed)", mode="qr", opening_hours="06:00-22:00",
                 time_zone="Asia/Urumqi")
            newest = station.next_config()
            assert (newest.version, newest.time_zone) == (2, "Asia/Urumqi")
            # What the station got is what the database holds, and when the admin saved it.
            row = stored(web)
            assert (row.config_version, row.config_changed_at) == (newest.version, newest.updated_at)

        # The station answers (retained); the page follows.
        with Listener(mosquitto.host, mosquitto.port) as as_station:
            def answer(version: int, applied: bool, active: int | None, reason: str = "") -> None:
                ack = StationConfigAck(station_id=SID, version=version, applied=applied, active_version=active,
                                       mode="face", reason=reason)
                assert as_station.link.publish(topics.station_config_ack(SID), encode(ack), retain=True)

            answer(newest.version, False, changed.version, "mode qr needs the server's QR public key")
            assert wait_for(lambda: config_cell(admin)[0] == "refused")
            assert config_cell(admin)[1] == (f"v{newest.version} refused by the station: mode qr needs the server's "
                                             f"QR public key the station uses v{changed.version}")
            as_station.link.publish(topics.station_config_ack(SID), b'{"schema": "station_config_ack/1", "x": 1}')
            answer(newest.version, True, newest.version)
            assert wait_for(lambda: config_cell(admin)[0] == "applied")
            assert config_cell(admin)[1] == f"applied v{newest.version}"
            assert wait_for(lambda: ingest.counters["config_acks"] == 2)
            assert ingest.counters["rejected_malformed"] == 1
            row = stored(web)
            assert (row.config_ack_version, row.config_applied_version, row.config_ack_status,
                    row.config_ack_detail) == (2, 2, "applied", None)
            # A late answer about an older version changes nothing.
            answer(changed.version, True, changed.version)
            assert wait_for(lambda: ingest.counters["config_acks"] == 3)
            assert config_cell(admin) == ("applied", f"applied v{newest.version}")
            assert stored(web).config_applied_version == 2

        # A restarted server publishes the same version again and learns the answer from the retained ack.
        web.runtime.stop()
        web.runtime.start()
        assert web.runtime.ingest is not None and web.runtime.ingest.wait_connected(10)
        with Listener(mosquitto.host, mosquitto.port, topics.station_config(SID)) as station:
            again = station.next_config()
            assert again == newest
        assert wait_for(lambda: config_cell(admin)[0] == "applied")


def test_the_broker_acl_lets_a_station_read_only_its_own_config(tmp_path: Path) -> None:
    need(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd (apt-get install mosquitto)")
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    secrets = {name: uuid.uuid4().hex for name in ("waystation.server", "st-a", "st-b")}
    for name, password in secrets.items():
        subprocess.run(["mosquitto_passwd", str(passwd), name], input=f"{password}\n" * 2, text=True, check=True,
                       capture_output=True)
    broker = Mosquitto(tmp_path / "broker", access=f"allow_anonymous false\npassword_file {passwd}\nacl_file {ACL}\n")
    broker.start()

    def as_user(name: str, *filters: str) -> Listener:
        return Listener(broker.host, broker.port, *filters, user=name, password=secrets[name])

    def config_for(sid: str, mode: str) -> bytes:
        return encode(StationConfig(station_id=sid, version=1, mode=mode, opening_hours="24h",
                                    time_zone="Asia/Shanghai"))

    try:
        with as_user("waystation.server", topics.ALL_CONFIG_ACKS) as server, \
                as_user("st-a", "ws/v1/station/+/config", topics.station_config("st-b")) as st_a, \
                as_user("st-b", topics.station_config("st-b")) as st_b:
            time.sleep(0.3)
            # A station cannot forge the server's config for another station, or its own.
            st_a.link.publish(topics.station_config("st-b"), config_for("st-b", "qr"), retain=True)
            st_a.link.publish(topics.station_config("st-a"), config_for("st-a", "qr"), retain=True)
            # The server's reach every station, each only its own.
            assert server.link.publish(topics.station_config("st-a"), config_for("st-a", "face"), retain=True)
            assert server.link.publish(topics.station_config("st-b"), config_for("st-b", "face"), retain=True)
            got_b = wait_for(lambda: st_b.drain(0.1), 10)
            assert [(t, decode(p, StationConfig).mode) for t, p in got_b] == [(topics.station_config("st-b"), "face")]
            got_a = st_a.drain(0.5)
            assert [(t, decode(p, StationConfig).mode) for t, p in got_a] == [(topics.station_config("st-a"), "face")]
            # A station answers only for itself; the server hears it.
            ack = StationConfigAck(station_id="st-b", version=1, applied=True, active_version=1, mode="face")
            st_a.link.publish(topics.station_config_ack("st-b"), encode(ack))
            assert st_b.link.publish(topics.station_config_ack("st-b"), encode(ack))
            heard = wait_for(lambda: server.drain(0.1), 10)
            assert heard == [(topics.station_config_ack("st-b"), encode(ack))]
            assert server.drain(0.5) == []
    finally:
        broker.stop()


# -- several ingest processes ----------------------------------------------------------------


@pytest.fixture
def shared_web(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[WebApp, IngestWorker]]:
    """The server and a second ingest worker on the same database, as one MQTT 5 shared subscription group."""
    group = {"mqtt_protocol": "5", "mqtt_shared_group": "ingest"}
    runtime = ServerRuntime(web_settings(tmp_path, mosquitto, **group)).start()
    worker: IngestWorker | None = None
    try:
        web = WebApp(runtime=runtime, passwords=create_users(runtime))
        worker = IngestWorker(web_settings(tmp_path, mosquitto, **group)).start()  # same data_dir: same database
        yield web, worker
    finally:
        if worker is not None:
            worker.stop()
        runtime.stop()


def test_an_answer_taken_by_another_ingest_worker_shows_on_the_page(
    shared_web: tuple[WebApp, IngestWorker], mosquitto: Mosquitto
) -> None:
    web, worker = shared_web
    server_ingest, worker_ingest = web.runtime.ingest, worker.ingest
    assert server_ingest is not None and worker_ingest is not None
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, trust_env=False)
    admin, csrf = admin_client(web)
    with api, admin, Listener(mosquitto.host, mosquitto.port) as station:
        # Both processes are subscribed once each has refused a message from an unregistered station.
        probe = encode(StationStatus(station_id="zz-probe", online=True))
        assert wait_for(lambda: station.link.publish(topics.status("zz-probe"), probe) and all(
            i.counters["rejected_unknown_station"] for i in (server_ingest, worker_ingest)), 20)
        api.post("/api/stations", json={"station_id": SID, "name": "Rest east"}).raise_for_status()
        edit(admin, csrf, mode="qr")
        assert config_cell(admin) == ("pending", "v1 pending no answer from the station yet")

        def answer(applied: bool, at: datetime, version: int = 1) -> str:
            """Publish an answer as the station does (retained); which process stored it."""
            before = (server_ingest.counters["config_acks"], worker_ingest.counters["config_acks"])
            ack = StationConfigAck(station_id=SID, version=version, applied=applied,
                                   active_version=version if applied else None, mode="face",
                                   reason="" if applied else "mode qr needs the server's QR public key", at=at)
            assert station.link.publish(topics.station_config_ack(SID), encode(ack), retain=True)
            assert wait_for(lambda: (server_ingest.counters["config_acks"], worker_ingest.counters["config_acks"])
                            != before)
            return "worker" if worker_ingest.counters["config_acks"] > before[1] else "server"

        # The broker hands each answer to one of the two: send until the worker took an "applied" one
        # that came after a refusal, so only the database can tell the page about it.
        at = datetime.now(timezone.utc) - timedelta(hours=1)
        for attempt in range(10):
            at += timedelta(seconds=2)
            if answer(False, at) == "server":
                assert wait_for(lambda: config_cell(admin)[0] == "refused")
                if answer(True, at + timedelta(seconds=1)) == "worker":
                    break
        else:
            pytest.fail("the broker never gave the worker an answer")
        assert config_cell(admin) == ("applied", "applied v1")
        # An answer about an older version, whoever takes it, changes nothing.
        answer(False, at + timedelta(seconds=5), version=0)
        assert config_cell(admin) == ("applied", "applied v1")
    with web.sessions() as session:
        row = session.get(Station, SID)
        assert (row.config_ack_version, row.config_applied_version, row.config_ack_status) == (1, 1, "applied")


# -- the migration -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("postgres_url")


def test_stored_answers_only_move_forward(db_url: str) -> None:
    """record_config_ack on SQLite and PostgreSQL: newer versions, or newer answers about the same one, win."""
    engine = make_engine(db_url)
    try:
        upgrade_database(engine)
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            register_station(session=session, station_id=SID, name="Rest east")
        t = datetime.now(timezone.utc) - timedelta(hours=1)

        def record(version: int, applied: bool, at: datetime, sid: str = SID) -> bool | None:
            ack = StationConfigAck(station_id=sid, version=version, applied=applied,
                                   active_version=version if applied else version - 1, mode="face",
                                   reason="" if applied else "no QR key", at=at)
            with sessions() as session:
                return record_config_ack(session=session, ack=ack)

        def shown() -> tuple[str, str]:
            with sessions() as session:
                state = ConfigState.of(session.get(Station, SID))
            return (state.status or "", f"v{state.ack_version} uses v{state.active_version} {state.reason}".strip())

        assert record(2, False, t) is True and shown() == ("refused", "v2 uses v1 no QR key")
        assert record(2, True, t + timedelta(seconds=1)) is True and shown() == ("applied", "v2 uses v2")
        assert record(2, True, t + timedelta(seconds=1)) is True and shown() == ("applied", "v2 uses v2")  # again
        assert record(2, False, t) is None and shown() == ("applied", "v2 uses v2")  # a late copy of the refusal
        assert record(1, True, t + timedelta(hours=2)) is None and shown() == ("applied", "v2 uses v2")
        assert record(1, True, t, sid="nowhere") is False
        # An answer dated in the future (a fast station clock) is stored as of now, so it cannot block later ones.
        assert record(3, False, t + timedelta(days=1)) is True
        assert record(3, True, datetime.now(timezone.utc)) is True and shown() == ("applied", "v3 uses v3")
    finally:
        engine.dispose()
