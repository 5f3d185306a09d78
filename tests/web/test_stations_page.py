"""The stations pages in a real Chromium.

An admin registers a station and downloads its provisioning bundle once; a
station process connects with exactly that bundle (TLS, its own password, the
deploy ACL), and the page shows it online with its heartbeat; the process is
killed without a goodbye and, after a reload, the page shows it offline (the
broker published its last will). The list shows alarms, camera state, gallery
lag and heartbeat times in the station's zone; auditors read but cannot change;
edits are validated and audited; an admin removes a station by typing its ID.

With WAYSTATION_DOC_SCREENSHOTS=docs/img the list is also saved as docs/img/admin-stations.png.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from core.i18n import translator
from models.encoding import FACE_MODEL_ID
from models.messages import Decision, EntryEvent, EventKind
from server import gallery
from server.ingest_store import store_events
from server.tables import AuditEvent, Entry, GalleryChangeRow, Station, Worker, utcnow
from tests.support.browser import WebApp, secure_web_app
from tests.support.services import Mosquitto
from tests.support.usage_data import fill

REPO = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("WAYSTATION_DOC_SCREENSHOTS")

# A station as edge/sync.py connects: fixed client id, retained "offline" last will, retained heartbeats.
STATION = r"""
import sys, time
from core.mqtt import MqttLink, MqttSettings
from models import topics
from models.messages import StationStatus, encode
sid, host, port, client_id, password, ca = sys.argv[1:7]
will = (topics.status(sid), encode(StationStatus(station_id=sid, online=False)), 1, True)
link = MqttLink(MqttSettings(host=host, port=int(port), client_id=client_id, username=sid, password=password,
                             tls_ca=ca, keepalive=5, clean_start=False), will=will)
link.start()
if not link.wait_connected(15):
    print("refused", link.refused_reason, flush=True)
    sys.exit(1)
print("connected", flush=True)
started = time.monotonic()
while True:
    beat = StationStatus(station_id=sid, online=True, agent_version="edge-test", gallery_version=0, outbox_depth=7,
                         camera="ok", door="locked", uptime_s=time.monotonic() - started)
    link.publish(topics.status(sid), encode(beat), retain=True)
    time.sleep(30)
"""


@pytest.fixture
def secure_web(tmp_path: Path) -> Iterator[tuple[WebApp, Mosquitto, Path]]:
    """The server on a TLS broker with passwords and the deploy ACL, able to provision stations."""
    with secure_web_app(tmp_path) as site:
        yield site.web, site.broker, site.passwd


def reload_until(page, selector: str, text: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while page.locator(selector).inner_text().strip() != text:
        assert time.monotonic() < deadline, f"{selector} never showed {text!r}: {page.locator(selector).inner_text()}"
        time.sleep(0.3)
        page.reload()


def test_register_download_the_bundle_connect_and_go_offline(
    secure_web, browser, tmp_path: Path,  # noqa: ANN001
) -> None:
    web, broker, passwd = secure_web
    page = web.login(browser, "admin")
    page.goto(web.url + "/stations")
    page.fill("#register-form input[name=station_id]", "kashgar-01")
    page.fill("#register-form input[name=name]", "喀什 1 号驿站")
    page.fill("#register-form input[name=place]", "喀什市 人民东路 1 号")
    page.fill("#register-form input[name=time_zone]", "Asia/Urumqi")
    page.select_option("#register-form select[name=mode]", "qr_then_face")
    page.click("#register-station")
    page.wait_for_url("**/stations/kashgar-01?bundle=*")
    with page.expect_download() as download:
        page.click("#download-bundle")
    bundle = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert sorted(bundle.namelist()) == ["kashgar-01/ca.crt", "kashgar-01/station.env", "kashgar-01/station.yaml"]
    password = re.fullmatch(r"WAYSTATION_EDGE_MQTT__PASSWORD=(\S+)\n", bundle.read("kashgar-01/station.env").decode())
    assert password and password.group(1) not in page.content()
    # The download works once; the password is nowhere on the server but as the broker's hash.
    again = page.context.request.get(web.url + page.locator("#download-bundle").get_attribute("href"))
    assert again.status == 410
    assert "kashgar-01:" in passwd.read_text() and password.group(1) not in passwd.read_text()
    page.reload()
    assert page.locator("#download-bundle").count() == 0
    with web.sessions() as session:
        actions = [a.action for a in session.query(AuditEvent).filter_by(target="kashgar-01").order_by(AuditEvent.id)]
        station = session.get(Station, "kashgar-01")
    assert actions == ["station.register", "station.provision", "station.bundle_download"]
    assert (station.time_zone, station.mode, station.place) == (
        "Asia/Urumqi", "qr_then_face", "喀什市 人民东路 1 号")

    broker.reload()  # what `systemctl reload mosquitto` does after provisioning
    config = yaml.safe_load(bundle.read("kashgar-01/station.yaml"))["mqtt"]
    ca = tmp_path / "ca.crt"
    ca.write_bytes(bundle.read("kashgar-01/ca.crt"))
    proc = subprocess.Popen(
        [sys.executable, "-c", STATION, "kashgar-01", config["host"], str(config["port"]), config["client_id"],
         password.group(1), str(ca)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected", proc.stderr.read()
        page.goto(web.url + "/stations")
        row = "#stations tr[data-station=kashgar-01]"
        reload_until(page, f"{row} .status", "Online")
        assert page.locator(f"{row} .camera").inner_text() == "working"
        assert page.locator(f"{row} .outbox").inner_text() == "7"
        beats = []  # read around the page: a heartbeat may land in between
        for step in ("before", "after"):
            with web.sessions() as session:
                beats.append(session.get(Station, "kashgar-01").heartbeat_at)
            if step == "before":
                page.reload()
                shown = page.locator(f"{row} .heartbeat").inner_text()
        urumqi = [translator("en").time(b, "Asia/Urumqi") for b in beats if b is not None]
        assert len(urumqi) == 2 and any(t in shown for t in urumqi), (beats, shown)
        proc.kill()  # SIGKILL: no DISCONNECT, the broker publishes the last will
        proc.wait(10)
        reload_until(page, f"{row} .status", "Offline")
        page.goto(web.url + "/stations/kashgar-01")
        assert page.locator("#status").inner_text() == "Offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def seed_stations(web: WebApp) -> None:
    now = utcnow()

    def station(sid: str, name: str, place: str, *, online: bool, age: timedelta, acked: int, camera: str,
                outbox: int = 0, **more: str) -> Station:
        return Station(station_id=sid, name=name, place=place, online=online, heartbeat_at=now - age,
                       last_seen_at=now - age, gallery_version_acked=acked, camera_state=camera, outbox_depth=outbox,
                       **more)

    def alarm(kind: EventKind, age: timedelta) -> EntryEvent:
        return EntryEvent(station_id="bj-1", kind=kind, decision=Decision.DENIED, occurred_at=now - age)

    with web.sessions() as session:
        session.add_all([
            station("bj-1", "北京东站", "东城区 建国门内大街 1 号", online=True, age=timedelta(seconds=40), acked=3,
                    camera="ok"),
            station("sh-2", "徐汇漕溪站", "徐汇区 漕溪北路 88 号", online=True, age=timedelta(seconds=20), acked=1,
                    camera="stalled", outbox=12, opening_hours="06:00-23:00", mode="face"),
            station("xj-3", "乌鲁木齐南站", "天山区 解放南路 9 号", online=False, age=timedelta(hours=3), acked=2,
                    camera="ok", time_zone="Asia/Urumqi", mode="qr_then_face"),
        ])
        session.add_all([GalleryChangeRow(op="upsert", worker_id=f"w{i}") for i in range(3)])
        session.commit()
        store_events(session=session, events=[
            alarm(EventKind.HELD_OPEN, timedelta(hours=1)), alarm(EventKind.HELD_OPEN, timedelta(hours=2)),
            alarm(EventKind.TAMPER, timedelta(days=3)),
            EntryEvent(station_id="bj-1", worker_id="w1", decision=Decision.GRANTED,
                       occurred_at=now - timedelta(minutes=5)),
        ])


def test_the_list_shows_state_alarms_and_lag_and_auditors_only_read(web: WebApp, browser) -> None:  # noqa: ANN001
    seed_stations(web)
    page = web.login(browser, "auditor", viewport={"width": 1400, "height": 800})
    page.goto(web.url + "/stations")
    rows = {r: f"#stations tr[data-station={r}]" for r in ("bj-1", "sh-2", "xj-3")}
    status = [page.locator(f"{rows[r]} .status .badge").first.inner_text() for r in rows]
    assert status == ["Online", "Online", "Offline"]

    def alarms(r: str) -> list[str]:
        return page.locator(f"{rows[r]} .alarms .badge").evaluate_all("b => b.map(x => x.dataset.alarm)")

    assert alarms("bj-1") == ["held_open"]  # the tamper of three days ago is over
    assert "×2" in page.locator(f"{rows['bj-1']} .alarms").inner_text()
    assert alarms("sh-2") == ["camera_down"] and alarms("xj-3") == []  # offline: its camera is not judged
    assert "2 changes behind" in page.locator(f"{rows['sh-2']} .gallery").inner_text()
    assert "up to date" in page.locator(f"{rows['bj-1']} .gallery").inner_text()
    with web.sessions() as session:
        beat = session.get(Station, "xj-3").heartbeat_at
    assert translator("en").time(beat, "Asia/Urumqi") in page.locator(f"{rows['xj-3']} .heartbeat").inner_text()
    assert page.locator("#register-form").count() == 0
    page.click(f"{rows['bj-1']} a")
    assert page.locator("#events tbody tr").count() == 4 and page.locator("#edit-form").count() == 0
    # Auditors cannot change anything, even with their own valid CSRF token.
    token = page.locator("header form input[name=csrf_token]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    r = httpx.post(web.url + "/stations/bj-1", data={"csrf_token": token, "name": "Renamed"}, cookies=cookies,
                   trust_env=False)
    assert r.status_code == 403
    with web.sessions() as session:
        assert session.get(Station, "bj-1").name == "北京东站"


def test_admin_edits_are_validated_and_audited(web: WebApp, browser) -> None:  # noqa: ANN001
    seed_stations(web)
    page = web.login(browser, "admin")
    page.goto(web.url + "/stations/sh-2")
    page.fill("#edit-form input[name=time_zone]", "Mars/Olympus")
    page.fill("#edit-form input[name=opening_hours]", "from dawn to dusk")
    page.click("#save-station")
    errors = page.locator("[role=alert]").all_inner_texts()
    assert "Unknown time zone: use a name like Asia/Shanghai or Asia/Urumqi." in errors
    assert any(e.startswith("Opening hours:") for e in errors)
    page.fill("#edit-form input[name=time_zone]", "Asia/Urumqi")
    page.fill("#edit-form input[name=opening_hours]", "06:00-12:00, 14:00-02:00")
    page.fill("#edit-form input[name=place]", "徐汇区 漕溪北路 90 号")
    page.select_option("#edit-form select[name=mode]", "qr")
    page.click("#save-station")
    assert page.locator("[role=status]").inner_text() == "Saved."
    with web.sessions() as session:
        st = session.get(Station, "sh-2")
        row = session.query(AuditEvent).filter_by(action="station.edit", target="sh-2").one()
    assert (st.time_zone, st.opening_hours, st.mode, st.place) == ("Asia/Urumqi", "06:00-12:00, 14:00-02:00", "qr",
                                                                  "徐汇区 漕溪北路 90 号")
    assert row.actor == "admin" and row.detail["mode"] == ["face", "qr"] and set(row.detail) == {
        "time_zone", "opening_hours", "mode", "place"}
    # Without a password file the station is still registered, and the page says why there is no bundle.
    page.goto(web.url + "/stations")
    page.fill("#register-form input[name=station_id]", "Bad/Id")
    page.fill("#register-form input[name=name]", "Bad")
    page.click("#register-station")
    assert page.locator("[role=alert]").first.inner_text().startswith("Station ID:")
    page.fill("#register-form input[name=station_id]", "gz-9")
    page.click("#register-station")
    assert "mqtt_password_file" in page.locator("#provision-error").inner_text()
    with web.sessions() as session:
        assert session.get(Station, "gz-9") is not None


def test_weekday_opening_hours_are_saved_in_their_canonical_form(web: WebApp, browser) -> None:  # noqa: ANN001
    """In Chinese: a day in two groups is refused naming the day; weekday hours are stored as the stations read them."""
    seed_stations(web)
    page = web.login(browser, "admin", language="zh_CN")
    page.goto(web.url + "/stations/sh-2")
    assert "Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00" in page.locator("#hours-hint").inner_text()
    page.fill("#edit-form input[name=opening_hours]", "Mon-Fri 07:00-21:00; Fri 22:00-02:00")
    page.click("#save-station")
    assert "开放时间：Fri 出现在两组里；每一天只能属于一组。" in page.locator("[role=alert]").all_inner_texts()
    page.fill("#edit-form input[name=opening_hours]", "sat-sun 09:00 - 17:00;mon-fri 07:00-21:00")
    page.click("#save-station")
    assert page.locator("[role=status]").inner_text() == "已保存。"
    canonical = "Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00"
    assert page.locator("#edit-form input[name=opening_hours]").input_value() == canonical
    with web.sessions() as session:
        assert session.get(Station, "sh-2").opening_hours == canonical


def test_five_busy_stations_show_their_own_state(web: WebApp, browser) -> None:  # noqa: ANN001
    """A month of realistic entries at five stations, each in another state, as an admin sees them in Chinese."""
    assert web.runtime.engine is not None
    filled = fill(web.runtime.engine, n_entries=3000, days=30, stations=5, workers=400)
    now = utcnow()
    states = {  # online, seconds since the heartbeat, acked version, camera, outbox
        "ws-01": (True, 35, 6, "ok", 0), "ws-02": (True, 12, 6, "ok", 2), "ws-03": (True, 50, 4, "stalled", 0),
        "ws-04": (False, 4 * 3600, 5, "ok", 0), "ws-05": (True, 20, 6, "ok", 41),
    }
    with web.sessions() as session:
        session.add_all([GalleryChangeRow(op="upsert", worker_id=f"w{i:06d}") for i in range(6)])
        for sid, (online, age, acked, camera, outbox) in states.items():
            st = session.get(Station, sid)
            st.online = online
            st.heartbeat_at = st.last_seen_at = now - timedelta(seconds=age)
            st.gallery_version_acked, st.camera_state, st.outbox_depth, st.door_state = acked, camera, outbox, "locked"
            st.agent_version = "0.9.0"
        session.get(Station, "ws-05").outbox_alarm = True
        session.get(Station, "ws-02").opening_hours, session.get(Station, "ws-02").mode = "06:00-23:30", "qr_then_face"
        session.commit()
        held = session.query(Entry).filter(Entry.station_id == "ws-01", Entry.kind == "held_open",
                                           Entry.occurred_at >= now - timedelta(hours=24)).count()
    page = web.login(browser, "admin", language="zh_CN", viewport={"width": 1400, "height": 900})
    page.goto(web.url + "/stations")
    status = page.locator("#stations tbody tr .status .badge:first-child").all_inner_texts()
    assert status == ["在线", "在线", "在线", "离线", "在线"]
    alarms = lambda sid: page.locator(f"tr[data-station={sid}] .alarms .badge").evaluate_all(  # noqa: E731
        "b => b.map(x => x.dataset.alarm)")
    assert alarms("ws-03") == ["camera_down"] and alarms("ws-05")[-1] == "outbox_full"
    assert ("held_open" in alarms("ws-01")) == (held > 0)
    assert "落后 2 个变更" in page.locator("tr[data-station=ws-03] .gallery").inner_text()
    assert page.locator("tr[data-station=ws-04] .gallery").inner_text().startswith("5 / 6")
    assert filled.n_entries == 3000
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "admin-stations.png"), full_page=True)


def test_an_admin_removes_a_station_by_typing_its_id(web: WebApp, browser) -> None:  # noqa: ANN001
    """Without a broker password file (the `web` server has none) the page says the login must go by hand."""
    seed_stations(web)
    vector = np.random.default_rng(7).normal(size=128).astype(np.float32)
    with web.sessions() as session:
        for worker_id, listed in (("w-sh", ["sh-2"]), ("w-sh-bj", ["sh-2", "bj-1"]), ("w-bj", ["bj-1"])):
            gallery.enroll_worker(session=session, name=worker_id, vectors=[vector / np.linalg.norm(vector)],
                                  model_id=FACE_MODEL_ID, worker_id=worker_id)
            gallery.set_access(session=session, worker_id=worker_id, valid_from=None, valid_until=None,
                               stations=listed)
    auditor = web.login(browser, "auditor")
    auditor.goto(web.url + "/stations/sh-2")
    assert auditor.locator("#remove-station").count() == 0
    assert auditor.goto(web.url + "/stations/sh-2/remove").status == 403

    page = web.login(browser, "admin")
    page.goto(web.url + "/stations/sh-2")
    page.click("#remove-station")
    page.wait_for_url("**/stations/sh-2/remove*")
    assert page.locator("#limited-workers").inner_text().startswith(
        "2 workers may enter only at listed stations that include this one")
    assert "For 1 of them it is the only station" in page.locator("#limited-workers").inner_text()
    assert "remove the station's broker login by hand" in page.locator("#broker-login").inner_text()
    page.fill("input[name=confirm_id]", "bj-1")  # another station's ID
    page.click("#confirm-remove")
    assert page.locator("[role=alert]").inner_text() == (
        "The ID you typed is not this station's ID. Nothing was removed.")
    with web.sessions() as session:
        assert session.get(Station, "sh-2") is not None
    page.fill("input[name=confirm_id]", "sh-2")
    page.click("#confirm-remove")
    page.wait_for_url("**/stations?removed=sh-2*")
    assert page.locator("#removed").inner_text() == "Station sh-2 removed."
    assert page.locator("#remove-login").inner_text().startswith(
        "No broker password file is configured: remove the station's broker login by hand (mosquitto_passwd -D")
    assert page.locator("#stations tbody tr").evaluate_all("rows => rows.map(r => r.dataset.station)") == [
        "bj-1", "xj-3"]
    with web.sessions() as session:
        assert session.get(Station, "sh-2") is None
        lists = {w: session.get(Worker, w).stations for w in ("w-sh", "w-sh-bj", "w-bj")}
        row = session.query(AuditEvent).filter_by(action="station.remove").one()
    assert lists == {"w-sh": [], "w-sh-bj": ["bj-1"], "w-bj": ["bj-1"]}
    assert (row.actor, row.target, row.detail["workers"]) == ("admin", "sh-2", ["w-sh", "w-sh-bj"])
    # In Chinese, too.
    zh = web.login(browser, "admin", language="zh_CN")
    zh.goto(web.url + "/stations/xj-3")
    assert zh.locator("#remove-station").inner_text() == "移除驿站"
