"""Removing a station: its row, its place in workers' station lists, its retained config and its broker login.

A real server (SQLite file, uvicorn, MQTT ingest) on Debian's mosquitto with
TLS, a password file and the deploy ACL; stations provisioned the real way
(server/provision.py with mosquitto_passwd) connect with their own passwords.
The admin removes one over the API and one on its page (real HTTP with the
session cookie and CSRF token a browser sends).
"""

from __future__ import annotations

import html
import queue
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from core.mqtt import MqttLink, MqttSettings
from models import topics
from models.encoding import FACE_MODEL_ID
from models.messages import Decision, EntryEvent, GalleryChangeMessage, StationStatus, decode, encode
from models.station_config import StationConfig, StationConfigAck
from server import gallery, users
from server.provision import provision_station
from server.tables import AuditEvent, Entry, Station, User, Worker
from tests.support.browser import API_TOKEN, SERVER_USER, WebApp, secure_web_app
from tests.support.services import Mosquitto, Pki, wait_for

pytestmark = pytest.mark.broker

GONE, STAY = "st-gone", "st-stay"


@dataclass
class Site:
    web: WebApp
    broker: Mosquitto
    pki: Pki
    passwd: Path
    server_password: str
    station_passwords: dict[str, str]

    def link(self, user: str, password: str, *filters: str) -> tuple[MqttLink, queue.Queue[tuple[str, bytes]]]:
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        link = MqttLink(MqttSettings(host=self.broker.host, port=self.broker.port, username=user, password=password,
                                     tls_ca=str(self.pki.ca_cert), clean_start=True,
                                     client_id=f"{user}-{uuid.uuid4().hex[:6]}"))
        for f in filters:
            link.subscribe(f, lambda t, p: got.put((t, p)))
        link.start()
        return link, got

    def station(self, sid: str, *filters: str) -> tuple[MqttLink, queue.Queue[tuple[str, bytes]]]:
        link, got = self.link(sid, self.station_passwords[sid], *filters)
        assert link.wait_connected(10), link.refused_reason
        return link, got

    def users_in_password_file(self) -> set[str]:
        return {line.split(":", 1)[0] for line in self.passwd.read_text().splitlines() if line}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with secure_web_app(tmp_path) as secure:
        web, broker, settings = secure.web, secure.broker, secure.web.runtime.settings
        passwords = {}
        with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, trust_env=False) as api:
            for sid in (GONE, STAY):
                # Registered over the API (which publishes its config), then given broker credentials.
                api.post("/api/stations", json={"station_id": sid, "name": sid}).raise_for_status()
                done = provision_station(settings=settings, station_id=sid, out_dir=tmp_path / sid, rotate=True)
                found = re.search(r"^WAYSTATION_EDGE_MQTT__PASSWORD=(\S+)$", done.env_file.read_text(), re.M)
                assert found
                passwords[sid] = found.group(1)
        broker.reload()  # what `systemctl reload mosquitto` does after provisioning
        yield Site(web, broker, secure.pki, secure.passwd, secure.server_password, passwords)


def browser_client(web: WebApp, role: str) -> tuple[httpx.Client, str]:
    """An HTTP client signed in as the ``role`` user, and its CSRF token."""
    with web.sessions() as s:
        user = s.query(User).filter_by(username=role).one()
        token = users.start_session(s, user=user, hours=1, remote_addr="127.0.0.1")
        found = users.session_user(s, token)
        assert found is not None
        csrf = found[1].csrf_token
    return httpx.Client(base_url=web.url, cookies={"ws_session": token}, trust_env=False, timeout=30), csrf


def enroll(web: WebApp, worker_id: str, stations: list[str] | None) -> None:
    rng = np.random.default_rng(len(worker_id))
    vector = rng.normal(size=128).astype(np.float32)
    with web.sessions() as session:
        gallery.enroll_worker(session=session, name=worker_id, vectors=[vector / np.linalg.norm(vector)],
                              model_id=FACE_MODEL_ID, worker_id=worker_id)
        if stations is not None:
            gallery.set_access(session=session, worker_id=worker_id, valid_from=None, valid_until=None,
                               stations=stations)


def entries_of(web: WebApp, sid: str) -> int:
    with web.sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.station_id == sid))


def test_a_removed_station_is_refused_everywhere_and_the_others_are_unaffected(site: Site) -> None:
    web = site.web
    ingest = web.runtime.ingest
    assert ingest is not None
    for worker_id, listed in (("w-both", [GONE, STAY]), ("w-only-gone", [GONE]), ("w-any", None),
                              ("w-stay", [STAY])):
        enroll(web, worker_id, listed)
    gone, gone_got = site.station(GONE, topics.station_config(GONE))
    stay, stay_got = site.station(STAY, topics.GALLERY_CHANGE)
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, trust_env=False)
    try:
        # Before: the station has its retained config, answers it, and its entries are stored.
        topic, payload = gone_got.get(timeout=10)
        assert topic == topics.station_config(GONE) and decode(payload, StationConfig).version == 0
        ack = StationConfigAck(station_id=GONE, version=0, applied=True, active_version=0, mode="face_or_qr")
        assert gone.publish(topics.station_config_ack(GONE), encode(ack), retain=True)
        assert gone.publish(topics.entry(GONE), encode(EntryEvent(station_id=GONE, decision=Decision.GRANTED)))
        assert wait_for(lambda: entries_of(web, GONE) == 1 and ingest.counters["config_acks"] == 1)
        time.sleep(0.3)
        while not stay_got.empty():  # the gallery changes of the enrollments above
            stay_got.get()

        # Only admins remove stations.
        for role in ("auditor", "staff"):
            client, csrf = browser_client(web, role)
            with client:
                r = client.delete(f"/api/stations/{GONE}", headers={"X-CSRF-Token": csrf})
                assert r.status_code == 403, (role, r.text)
        r = httpx.delete(f"{web.url}/api/stations/{GONE}", trust_env=False)
        assert r.status_code == 401
        r = api.delete(f"/api/stations/{GONE}")
        assert r.status_code == 204, r.text
        assert r.headers["Waystation-Broker-Login"] == "deleted"
        assert api.delete(f"/api/stations/{GONE}").status_code == 404
        assert api.delete("/api/stations/no-such-station").status_code == 404

        with web.sessions() as session:
            assert session.get(Station, GONE) is None and session.get(Station, STAY) is not None
            lists = {w.worker_id: w.stations for w in session.scalars(sa.select(Worker))}
            row = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "station.remove")).one()
        # Never wider than before: the worker who could enter only there now may enter nowhere.
        assert lists == {"w-both": [STAY], "w-only-gone": [], "w-any": None, "w-stay": [STAY]}
        assert (row.actor, row.target) == ("api-token", GONE)
        assert row.detail["workers"] == ["w-both", "w-only-gone"]
        assert entries_of(web, GONE) == 1  # the entry log keeps its station id
        # The other stations hear the two changed lists at once.
        heard = {}
        while len(heard) < 2:
            _topic, payload = stay_got.get(timeout=10)
            change = decode(payload, GalleryChangeMessage).change
            heard[change.worker_id] = change.stations
        assert heard == {"w-both": (STAY,), "w-only-gone": ()}

        # Its retained config is cleared (the connected station sees the empty copy), and so is its answer.
        assert wait_for(lambda: not gone_got.empty())
        assert gone_got.get() == (topics.station_config(GONE), b"")
        late, late_got = site.station(GONE, topics.station_config(GONE))  # not reloaded yet: still logs in
        server_view, server_got = site.link(SERVER_USER, site.server_password, topics.station_config_ack(GONE))
        try:
            assert server_view.wait_connected(10)
            time.sleep(1.0)
            assert late_got.empty() and server_got.empty()
        finally:
            late.stop()
            server_view.stop()

        # Its next entry is refused as from an unknown station, and nothing is stored.
        refused = ingest.counters["rejected_unknown_station"]
        assert gone.publish(topics.entry(GONE), encode(EntryEvent(station_id=GONE, decision=Decision.GRANTED)))
        assert wait_for(lambda: ingest.counters["rejected_unknown_station"] > refused)
        assert entries_of(web, GONE) == 1

        # Its broker login is gone from the password file; after the reload the broker drops and refuses it.
        assert site.users_in_password_file() == {SERVER_USER, STAY}
        assert site.passwd.stat().st_mode & 0o077 == 0
        site.broker.reload()
        assert wait_for(lambda: not gone.connected), "the broker kept the removed station connected"
        again, _ = site.link(GONE, site.station_passwords[GONE])
        try:
            assert wait_for(lambda: again.refused_reason is not None, 10)
            assert not again.connected
            assert re.search(r"not authori[sz]ed|bad user name or password", again.refused_reason, re.I)
        finally:
            again.stop()
        # The other station is untouched.
        assert stay.connected
        assert stay.publish(topics.status(STAY), encode(StationStatus(station_id=STAY, online=True)))
        statuses = ingest.counters["statuses"]
        assert wait_for(lambda: ingest.counters["statuses"] > statuses)
    finally:
        api.close()
        gone.stop()
        stay.stop()


def test_the_page_removes_a_station_only_when_its_id_is_typed(site: Site) -> None:
    web = site.web
    admin, csrf = browser_client(web, "admin")
    with admin:
        form = admin.get(f"/stations/{STAY}/remove").raise_for_status().text
        assert str(site.passwd) in form  # says which password file loses the login
        r = admin.post(f"/stations/{STAY}/remove", data={"csrf_token": csrf, "confirm_id": GONE})
        assert r.status_code == 422 and "Nothing was removed." in r.text
        r = admin.post(f"/stations/{STAY}/remove", data={"confirm_id": STAY})  # no CSRF token
        assert r.status_code == 403
        with web.sessions() as session:
            assert session.get(Station, STAY) is not None
        r = admin.post(f"/stations/{STAY}/remove", data={"csrf_token": csrf, "confirm_id": STAY})
        assert r.status_code == 303 and r.headers["location"] == f"/stations?removed={STAY}&login=deleted"
        page = admin.get(r.headers["location"]).text
        notice = re.search(r'<p class="ok" role="status" id="removed">(.*?)</p>', page, re.S)
        assert notice and html.unescape(notice.group(1)).startswith(
            f"Station {STAY} removed. Its broker login was deleted from {site.passwd}")
        assert f'data-station="{STAY}"' not in page and f'data-station="{GONE}"' in page
        assert admin.get(f"/stations/{STAY}").status_code == 404
    with web.sessions() as session:
        row = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "station.remove")).one()
        assert (row.actor, row.target) == ("admin", STAY)
    assert site.users_in_password_file() == {SERVER_USER, GONE}


def test_registering_a_removed_id_again_continues_its_config_versions(site: Site, tmp_path: Path) -> None:
    """The old station may still hold the config it applied, and it ignores older versions."""
    web = site.web
    admin, csrf = browser_client(web, "admin")
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, trust_env=False)
    with admin, api:
        for mode in ("qr", "face"):
            form = {"name": GONE, "time_zone": "Asia/Shanghai", "opening_hours": "24h", "mode": mode,
                    "csrf_token": csrf}
            assert admin.post(f"/stations/{GONE}", data=form).status_code == 303
        assert api.delete(f"/api/stations/{GONE}").status_code == 204
        api.post("/api/stations", json={"station_id": GONE, "name": "Again"}).raise_for_status()
    # New credentials for the new station of the old id (the old login was deleted with it).
    done = provision_station(settings=web.runtime.settings, station_id=GONE, out_dir=tmp_path / "again",
                             rotate=True)
    found = re.search(r"^WAYSTATION_EDGE_MQTT__PASSWORD=(\S+)$", done.env_file.read_text(), re.M)
    assert found and not done.registered
    site.station_passwords[GONE] = found.group(1)
    site.broker.reload()
    station, got = site.station(GONE, topics.station_config(GONE))
    try:
        topic, payload = got.get(timeout=10)
        config = decode(payload, StationConfig)
        assert (topic, config.version, config.mode) == (topics.station_config(GONE), 3, "face_or_qr")
    finally:
        station.stop()
