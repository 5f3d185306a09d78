"""Snapshots on the entry log in a real Chromium: an auditor opens a refused stranger's picture from the row (the
face is in it, the view is audited, nothing is cached); enrollment staff and anonymous visitors cannot get it."""

from __future__ import annotations

from pathlib import Path

import httpx

from core.imaging import load_image
from models.messages import Decision, EntryEvent, Scores
from models.snapshot import EntrySnapshot
from server.ingest_store import store_events
from server.snapshots import check_image, store_snapshot
from server.tables import AuditEvent, Station
from tests.support.browser import WebApp

STRANGER = "lfw_dev_strangers/Chang_Saio-yue/Chang_Saio-yue_0001.jpg"


def seed(web: WebApp, faces: Path, face_engine) -> tuple[EntryEvent, EntryEvent, bytes]:  # noqa: ANN001
    """A refused stranger with a snapshot (the face crop a station makes) and a granted worker without one."""
    from core.imaging import face_jpeg

    photo = load_image(faces / STRANGER)
    box = max(face_engine.detect(photo, upsample=1), key=lambda b: b.size)
    jpeg = face_jpeg(photo, (box.top, box.right, box.bottom, box.left), max_side=160, max_bytes=32 * 1024)
    stranger = EntryEvent(station_id="s1", decision=Decision.DENIED, reason="unknown face",
                          scores=Scores(distance=0.71, frames=6, face_px=110))
    worker = EntryEvent(station_id="s1", decision=Decision.GRANTED, worker_id="w1", reason="matched")
    with web.sessions() as session:
        session.add(Station(station_id="s1", name="北京东站", time_zone="Asia/Shanghai"))
        session.commit()
        store_events(session=session, events=[stranger, worker])
        snapshot = EntrySnapshot.of_jpeg(jpeg, event_id=stranger.event_id, station_id="s1")
        assert store_snapshot(session=session, snapshot=snapshot, jpeg=check_image(snapshot))
    return stranger, worker, jpeg


def views(web: WebApp) -> list[tuple[str, str]]:
    with web.sessions() as session:
        rows = session.query(AuditEvent).filter_by(action="entries.snapshot_view").order_by(AuditEvent.id)
        return [(a.actor, a.target) for a in rows]


def test_auditor_opens_the_snapshot_from_the_entry_log_and_the_view_is_audited(
    web: WebApp, browser, faces: Path, face_engine  # noqa: ANN001
) -> None:
    stranger, worker, jpeg = seed(web, faces, face_engine)
    page = web.login(browser, "auditor")
    page.goto(web.url + "/entries")
    refused = page.locator(f"tr[data-event-id='{stranger.event_id}']")
    assert refused.locator("a.snapshot-link").count() == 1
    assert page.locator(f"tr[data-event-id='{worker.event_id}'] a.snapshot-link").count() == 0
    assert page.locator("#snapshot-note").is_visible()
    assert views(web) == [], "listing the entries shows no face: nothing viewed yet"

    with page.expect_response(lambda r: r.url.endswith(f"/entries/{stranger.event_id}/snapshot")) as info:
        refused.locator("a.snapshot-link").click()
    response = info.value
    assert response.status == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    thumbnail = refused.locator("img.snapshot")
    thumbnail.wait_for()
    assert thumbnail.evaluate("img => img.complete && img.naturalWidth") > 0, "the picture shows in the row"
    assert response.body() == jpeg
    assert face_engine.detect(load_image(response.body()), upsample=1), "the stranger's face is in the picture"
    assert views(web) == [("auditor", str(stranger.event_id))]

    # Admins may look too; every look is another audit row.
    admin = web.login(browser, "admin")
    direct = admin.goto(web.url + f"/entries/{stranger.event_id}/snapshot")
    assert direct is not None and direct.status == 200
    assert views(web) == [("auditor", str(stranger.event_id)), ("admin", str(stranger.event_id))]
    missing = admin.goto(web.url + f"/entries/{worker.event_id}/snapshot")
    assert missing is not None and missing.status == 404


def test_staff_and_strangers_to_the_app_cannot_open_a_snapshot(
    web: WebApp, browser, faces: Path, face_engine  # noqa: ANN001
) -> None:
    stranger, _worker, jpeg = seed(web, faces, face_engine)
    url = web.url + f"/entries/{stranger.event_id}/snapshot"
    page = web.login(browser, "staff")
    response = page.goto(url)
    assert response is not None and response.status == 403
    assert response.body() != jpeg and response.headers["content-type"].startswith("text/html")
    anonymous = httpx.get(url, trust_env=False, follow_redirects=False)
    assert anonymous.status_code in (302, 303, 307) and anonymous.headers["location"].startswith("/login")
    assert jpeg not in anonymous.content
    assert views(web) == [], "refused requests view nothing"
