"""The workers pages in a real Chromium: search, profile, suspend and watch real MQTT stations confirm, QR, delete.

The stations are real MQTT clients that ack gallery changes (tests/web/workers_support.py).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from core.imaging import detect_qr, encode_jpeg, fit_within, load_image
from edge.qr import CredentialVerifier
from models.messages import Decision, EntryEvent, GalleryOp
from server import credentials, entries, gallery
from server.tables import Consent, Credential, FaceSample, Worker, WorkerPhoto
from tests.support.browser import WebApp
from tests.support.services import Mosquitto
from tests.web.workers_support import (  # noqa: F401 - vectors: a fixture
    StationClient,
    audit_rows,
    cookie_client,
    doc_shot,
    enroll,
    register,
    vectors,
    wait_acked,
)

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]


# -- search -----------------------------------------------------------------------------------------


def test_search_finds_workers_by_name_phone_and_id_and_pages_through_them(
    web: WebApp, browser, vectors: dict[str, np.ndarray]  # noqa: ANN001
) -> None:
    fang = enroll(web, "Wang Fang", [vectors["Bill_Clinton"]], phone="13800000001", category="courier",
                  employer="SF Express")
    enroll(web, "Li Na", [vectors["Calista_Flockhart"]], phone="13800000002", category="sanitation",
           employer="Pudong Sanitation")
    wei = enroll(web, "Zhang Wei", [vectors["Alvaro_Uribe"], vectors["Brad_Garrett"]], phone="13900000003",
                 category="food_delivery", employer="Meituan")
    with web.sessions() as s:
        gallery.set_status(session=s, worker_id=wei, status="suspended")
    page = web.login(browser, "admin")
    page.goto(web.url + "/workers")
    expect(page.locator("#worker-count")).to_have_text("3 workers found")
    doc_shot(page, "admin-workers.png")

    def search(**fields: str) -> list[str]:
        page.fill("input[name=q]", fields.get("q", ""))
        page.select_option("select[name=status]", fields.get("status", ""))
        page.select_option("select[name=category]", fields.get("category", ""))
        page.click("form[role=search] button[type=submit]")
        page.wait_for_load_state()
        if not page.locator("#workers").count():
            return []
        return page.locator("#workers tbody tr td:first-child").all_inner_texts()

    assert search(q="wang") == ["Wang Fang"]
    assert search(q="0002") == ["Li Na"]
    assert search(q=fang[:10]) == ["Wang Fang"]
    assert search(status="suspended") == ["Zhang Wei"]
    assert search(category="sanitation") == ["Li Na"]
    assert search(q="nobody like this") == []
    expect(page.locator("#worker-count")).to_have_text("0 workers found")
    # The row shows what an admin looks for at a glance.
    search(q="Zhang")
    row = page.locator("#workers tbody tr").first.inner_text()
    assert "Food delivery" in row and "Meituan" in row and "Suspended" in row and "\t2\t" in row

    # 55 couriers: two pages, no one twice, no one missing.
    for i in range(54):
        enroll(web, f"Courier {i:02d}", [vectors["Brad_Garrett"]], category="courier")
    first = search(category="courier")
    expect(page.locator("#worker-count")).to_have_text("55 workers found")
    assert len(first) == 50
    page.click("a[rel=next]")
    page.wait_for_load_state()
    second = page.locator("#workers tbody tr td:first-child").all_inner_texts()
    assert len(second) == 5 and not set(first) & set(second)
    assert sorted(first + second) == sorted(["Wang Fang"] + [f"Courier {i:02d}" for i in range(54)])
    assert page.locator("a[rel=next]").count() == 0
    page.context.close()


# -- profile ----------------------------------------------------------------------------------------


def test_profile_shows_details_consent_photo_and_history_in_station_time(
    web: WebApp, browser, vectors: dict[str, np.ndarray], faces: Path  # noqa: ANN001
) -> None:
    register(web, "kolkata-1", time_zone="Asia/Kolkata")
    wid = enroll(web, "Chen Jie", [vectors["Bill_Clinton"], vectors["Calista_Flockhart"]], phone="13700000007",
                 category="designated_driver", employer="Didi", enrolled_by="staff")
    thumb, _scale = fit_within(load_image(sorted((faces / "lfw_dev" / "Bill_Clinton").glob("*.jpg"))[1]), 160)
    base = datetime(2025, 3, 1, 2, 30, tzinfo=timezone.utc)  # 08:00 in Kolkata, 10:30 in Shanghai
    with web.sessions() as s:
        s.add(Consent(worker_id=wid, text_version="2025-01", allows_photo=True, recorded_by="staff"))
        s.add(WorkerPhoto(worker_id=wid, jpeg=encode_jpeg(thumb)))
        s.commit()
        for minutes in range(60):
            event = EntryEvent(station_id="kolkata-1", decision=Decision.GRANTED, worker_id=wid, reason="matched",
                               occurred_at=base + timedelta(minutes=minutes))
            entries.store_event(session=s, event=event)
    page = web.login(browser, "admin")
    page.goto(web.url + "/workers")
    page.click("text=Chen Jie")
    expect(page.locator("#worker-name")).to_have_text("Chen Jie")
    facts = page.locator("dl.facts").inner_text()
    assert "13700000007" in facts and "Designated driver" in facts and "Didi" in facts and wid in facts
    expect(page.locator("#face-samples")).to_have_text("2")
    expect(page.locator("#station-access")).to_have_text("Every station")
    consent = page.locator("#consents tbody tr").inner_text()
    assert "2025-01" in consent and "Yes" in consent and "staff" in consent
    # The thumbnail really loads.
    photo = page.locator("img.thumb")
    expect(photo).to_be_visible()
    assert page.evaluate("img => img.naturalWidth", photo.element_handle()) == thumb.shape[1]
    # The latest 50 entries, newest first, in the station's own time zone.
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(50)
    newest, oldest = (r.inner_text().replace("\u202f", " ") for r in (rows.first, rows.last))  # CLDR's narrow space
    assert newest.startswith("Mar 1, 2025, 8:59:00 AM") and "Asia/Kolkata" in newest and "Kolkata 1" in newest
    assert oldest.startswith("Mar 1, 2025, 8:10:00 AM")
    assert "10:30:00" not in page.locator("#history").inner_text()

    # The photo is served to admins only and never cached.
    admin, _csrf = cookie_client(web, page)
    with admin:
        r = admin.get(f"/workers/{wid}/photo")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.headers["cache-control"] == "no-store" and load_image(r.content).shape == thumb.shape
        assert admin.get("/workers/no-such-worker").status_code == 404
    auditor_page = web.login(browser, "auditor")
    auditor, _ = cookie_client(web, auditor_page)
    with auditor:
        assert auditor.get(f"/workers/{wid}/photo").status_code == 403
    r = httpx.get(f"{web.url}/workers/{wid}/photo", trust_env=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    page.context.close()
    auditor_page.context.close()


# -- suspend and watch the stations confirm ---------------------------------------------------------


def test_suspend_a_worker_and_watch_the_stations_confirm(
    web: WebApp, browser, mosquitto: Mosquitto, vectors: dict[str, np.ndarray]  # noqa: ANN001
) -> None:
    register(web, "north-gate", "south-gate")
    wid = enroll(web, "Zhao Lei", [vectors["Alvaro_Uribe"]], phone="13600000006", category="courier",
                 employer="JD Logistics")
    with web.sessions() as s:
        enrolled = gallery.latest_version(session=s)
    with (
        StationClient(mosquitto, "north-gate") as north,
        StationClient(mosquitto, "south-gate", auto_ack=False) as south,
    ):
        north.say_online(web, enrolled)
        south.say_online(web, enrolled)
        page = web.login(browser, "admin")
        page.goto(f"{web.url}/workers?q=Zhao")
        page.click("text=Zhao Lei")
        expect(page.locator("#confirm-summary")).to_contain_text("confirmed by 2 of 2 stations")

        page.click("#suspend")
        expect(page.locator("#worker-status")).to_have_text("Suspended")
        expect(page.locator("[role=status]")).to_contain_text("The worker is suspended")
        # Both stations got the broadcast: the worker, inactive, with their face data.
        for station in (north, south):
            change = station.next_change()
            assert (change.worker_id, change.op, change.active) == (wid, GalleryOp.UPSERT, False)
            assert len(change.encodings) == 1
        wait_acked(web, "north-gate", change.version)
        page.reload()
        north_row, south_row = page.locator("tr[data-station=north-gate]"), page.locator("tr[data-station=south-gate]")
        expect(north_row.locator("td.state")).to_have_text("Confirmed")
        expect(south_row.locator("td.state")).to_have_text("Waiting")
        expect(page.locator("#confirm-summary")).to_contain_text(
            f"Gallery change {change.version} of", ignore_case=False
        )
        expect(page.locator("#confirm-summary")).to_contain_text("confirmed by 1 of 2 stations")
        doc_shot(page, "admin-worker.png")

        south.ack(change.version)
        wait_acked(web, "south-gate", change.version)
        page.reload()
        expect(south_row.locator("td.state")).to_have_text("Confirmed")
        expect(page.locator("#confirm-summary")).to_contain_text("confirmed by 2 of 2 stations")

        # Reinstating travels the same way.
        south.auto_ack = True
        page.click("#reinstate")
        expect(page.locator("#worker-status")).to_have_text("Active")
        back = north.next_change()
        assert back.active is True and south.next_change().version == back.version
        wait_acked(web, "south-gate", back.version)
        wait_acked(web, "north-gate", back.version)
        page.reload()
        expect(page.locator("#confirm-summary")).to_contain_text("confirmed by 2 of 2 stations")
    assert [(a.actor, a.target) for a in audit_rows(web, "worker.suspend")] == [("admin", wid)]
    assert [(a.actor, a.target) for a in audit_rows(web, "worker.reinstate")] == [("admin", wid)]
    page.context.close()


def test_validity_days_and_station_list_reach_the_stations(
    web: WebApp, browser, mosquitto: Mosquitto, vectors: dict[str, np.ndarray]  # noqa: ANN001
) -> None:
    register(web, "north-gate", "south-gate")
    wid = enroll(web, "Sun Li", [vectors["Calista_Flockhart"]])
    with StationClient(mosquitto, "north-gate") as north:
        page = web.login(browser, "admin")
        page.goto(f"{web.url}/workers/{wid}")
        # A last day before the first day is refused and changes nothing.
        page.fill("input[name=valid_from]", "2030-06-10")
        page.fill("input[name=valid_until]", "2030-06-01")
        page.click("#validity-form button[type=submit]")
        expect(page.locator("[role=alert]")).to_have_text("The last day must not be before the first day.")
        expect(page.locator("#valid-until")).to_have_text("No limit")

        page.fill("input[name=valid_from]", "2030-06-01")
        page.fill("input[name=valid_until]", "2030-06-30")
        page.check("input[name=access][value=listed]")
        page.check("input[name=stations][value=north-gate]")
        page.click("#validity-form button[type=submit]")
        expect(page.locator("#valid-from")).to_have_text("2030-06-01")
        expect(page.locator("#valid-until")).to_have_text("2030-06-30")
        expect(page.locator("#station-access")).to_have_text("north-gate")
        change = north.next_change()
    shanghai = ZoneInfo("Asia/Shanghai")
    assert change.valid_from == datetime(2030, 6, 1, tzinfo=shanghai)
    assert change.valid_until == datetime(2030, 7, 1, tzinfo=shanghai)  # the whole last day is included
    assert change.stations == ("north-gate",)
    (row,) = audit_rows(web, "worker.validity")
    assert row.target == wid and row.detail["stations"] == ["north-gate"]
    page.context.close()


# -- QR credentials ---------------------------------------------------------------------------------


def test_a_qr_credential_is_shown_once_scans_as_the_signed_token_and_is_revoked(
    web: WebApp, browser, mosquitto: Mosquitto, vectors: dict[str, np.ndarray]  # noqa: ANN001
) -> None:
    register(web, "north-gate")
    wid = enroll(web, "Liu Yang", [vectors["Brad_Garrett"]])
    page = web.login(browser, "admin")
    page.goto(f"{web.url}/workers/{wid}")
    expect(page.locator("#credentials")).to_contain_text("No QR credential has been issued")
    page.fill("input[name=label]", "printed card")
    page.fill("input[name=valid_days]", "30")
    page.click("#issue")
    qr = page.locator("img#qr")
    expect(qr).to_be_visible()
    credential_id = page.locator("#credential-id").inner_text()
    # What the admin sees is what a station's camera reads: decode the rendered image.
    (text,) = detect_qr(load_image(qr.screenshot()))
    with web.sessions() as s:
        row = s.get(Credential, credential_id)
        bound = credentials.worker_version(session=s, worker_id=wid)
    assert row is not None and row.worker_id == wid and row.label == "printed card"
    assert row.expires_at - row.issued_at == timedelta(days=30)
    public_key = credentials.signer_for(web.runtime.settings.data_dir).public_key

    def station_holding(version: int) -> CredentialVerifier:
        held = {wid: {"active": True, "version": version}}
        return CredentialVerifier([public_key], worker=held.get)

    check = station_holding(bound).check(text)
    assert check.ok and check.credential_id == credential_id and check.claims.worker_id == wid
    (issued,) = audit_rows(web, "credential.issue")
    assert issued.target == wid and issued.detail["credential_id"] == credential_id

    page.click("text=Back to the worker")
    cred_row = page.locator(f"tr[data-credential='{credential_id}']")
    expect(cred_row).to_contain_text("Valid")
    expect(cred_row).to_contain_text("printed card")
    with StationClient(mosquitto, "north-gate") as north:
        cred_row.locator("button", has_text="Revoke").click()
        expect(page.locator("[role=status]")).to_contain_text("The QR credential is revoked")
        expect(page.locator(f"tr[data-credential='{credential_id}']")).to_contain_text("Revoked")
        change = north.next_change()
    assert change.worker_id == wid and change.version > bound
    refused = station_holding(change.version).check(text)
    assert not refused.ok and "revoked" in refused.reason
    (revoked,) = audit_rows(web, "credential.revoke")
    assert revoked.target == wid and revoked.detail == {"credential_id": credential_id}
    page.context.close()


# -- delete -----------------------------------------------------------------------------------------


def test_delete_needs_the_name_and_shows_every_station_confirming(
    web: WebApp, browser, mosquitto: Mosquitto, vectors: dict[str, np.ndarray]  # noqa: ANN001
) -> None:
    register(web, "north-gate", "south-gate")
    wid = enroll(web, "Huang Min", [vectors["Alvaro_Uribe"], vectors["Bill_Clinton"]], phone="13500000005")
    with web.sessions() as s:
        s.add(Consent(worker_id=wid, text_version="2025-01", allows_photo=True, recorded_by="staff"))
        s.add(WorkerPhoto(worker_id=wid, jpeg=b"\xff\xd8 not shown here"))
        s.commit()
    page = web.login(browser, "admin")
    page.goto(f"{web.url}/workers/{wid}")
    page.click("#delete")
    page.fill("input[name=confirm_name]", "Huang Ming")
    page.click("#confirm-delete")
    expect(page.locator("[role=alert]")).to_contain_text("Nothing was deleted")
    with web.sessions() as s:
        assert s.get(Worker, wid) is not None

    with (
        StationClient(mosquitto, "north-gate") as north,
        StationClient(mosquitto, "south-gate", auto_ack=False) as south,
    ):
        page.fill("input[name=confirm_name]", "Huang Min")
        page.click("#confirm-delete")
        expect(page.locator("h1")).to_have_text("Worker deleted")
        change = south.next_change()
        assert (change.op, change.worker_id, change.encodings) == (GalleryOp.DELETE, wid, ())
        assert north.next_change().version == change.version
        wait_acked(web, "north-gate", change.version)
        # The page reloads itself: north confirms, south is still waiting ...
        expect(page.locator("tr[data-station=north-gate] td.state")).to_have_text("Confirmed")
        expect(page.locator("tr[data-station=south-gate] td.state")).to_have_text("Waiting")
        assert page.locator("#all-confirmed").count() == 0
        south.ack(change.version)
        # ... until every station has deleted the face data.
        expect(page.locator("#all-confirmed")).to_have_text(
            "Every station has confirmed that it deleted the face data."
        )
        expect(page.locator("#confirm-summary")).to_contain_text("confirmed by 2 of 2 stations")
        expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)
    with web.sessions() as s:
        assert s.get(Worker, wid) is None and s.get(WorkerPhoto, wid) is None
        assert s.query(FaceSample).filter_by(worker_id=wid).count() == 0
        assert s.query(Consent).filter_by(worker_id=wid).count() == 0
    (row,) = audit_rows(web, "worker.delete")
    assert row.actor == "admin" and row.target == wid and "Huang" not in str(row.detail)
    page.goto(f"{web.url}/workers/{wid}")
    expect(page.locator("h1")).to_have_text("Page not found")
    page.context.close()


def test_every_change_needs_the_form_token(
    web: WebApp, browser, vectors: dict[str, np.ndarray]  # noqa: ANN001
) -> None:
    wid = enroll(web, "Ma Jun", [vectors["Brad_Garrett"]])
    page = web.login(browser, "admin")
    page.goto(f"{web.url}/workers/{wid}")
    admin, csrf = cookie_client(web, page)
    with admin:
        assert admin.post(f"/workers/{wid}/suspend").status_code == 403
        forged = {"confirm_name": "Ma Jun", "csrf_token": "forged"}
        assert admin.post(f"/workers/{wid}/delete", data=forged).status_code == 403
        with web.sessions() as s:
            assert s.get(Worker, wid).status == "active"
        assert admin.post(f"/workers/{wid}/suspend", data={"csrf_token": csrf}).status_code == 303
    with web.sessions() as s:
        assert s.get(Worker, wid).status == "suspended"
    page.context.close()


def test_chinese_profile(web: WebApp, browser, vectors: dict[str, np.ndarray]) -> None:  # noqa: ANN001
    wid = enroll(web, "周敏", [vectors["Calista_Flockhart"]], category="sanitation")
    page = web.login(browser, "admin", language="zh_CN")
    page.goto(f"{web.url}/workers/{wid}")
    expect(page.locator("#worker-status")).to_have_text("正常")
    assert "环卫工人" in page.locator("dl.facts").inner_text()
    expect(page.locator("#suspend")).to_have_text("暂停")
    page.context.close()


def test_validity_last_day_is_shown_as_entered() -> None:
    from server.web.pages.worker_data import day_start, first_day, last_day

    starts, ends = day_start(date(2030, 1, 1)), day_start(date(2030, 2, 1))
    assert first_day(starts) == date(2030, 1, 1) and last_day(ends) == date(2030, 1, 31)
    assert first_day(None) is None and last_day(None) is None
