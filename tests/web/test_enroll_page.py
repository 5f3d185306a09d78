"""The enrollment page in a real Chromium whose camera is a fake fed with a real shared photo.

Chromium's fake capture device plays a .y4m file (written here from a real
photo: a header line, then raw I420 frames), so getUserMedia, the video
element and the canvas snapshot are the browser's own; only the camera is
a stand-in. The server is real (SQLite file, uvicorn, mosquitto, the dlib
models). With WAYSTATION_DOC_SCREENSHOTS=docs/img the page states are also
saved as docs/img/enroll-*.png for docs/enrollment.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from core.faces import FaceEngine
from core.imaging import camera_frame, load_image
from server.runtime import ServerRuntime
from server.tables import AuditEvent, Consent, EnrollmentSession, FaceSample, Worker, WorkerPhoto
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, WebApp, create_users, web_settings
from tests.support.services import Mosquitto, need

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"
SHOTS = os.environ.get("WAYSTATION_DOC_SCREENSHOTS")


def shot(page: Any, name: str) -> None:
    """A screenshot for docs/enrollment.md, only when asked for (the tests never write into the repository)."""
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def write_y4m(path: Path, rgb: Any, frames: int = 15, fps: int = 15) -> Path:
    """A YUV4MPEG2 clip of one still frame (I420), the format Chromium's fake camera reads."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for _ in range(frames):
            out.write(b"FRAME\n" + i420)
    return path


@pytest.fixture(scope="module")
def camera_browser(playwright: Any, tmp_path_factory: pytest.TempPathFactory, faces: Path) -> Iterator[Any]:
    """Chromium with a fake camera showing Lin-Manuel Miranda's portrait at a 640x480 door camera's framing."""
    frame = camera_frame(load_image(faces / EX / "lin_manuel_miranda/lin-manuel-miranda.png"), 640, 480)
    clip = write_y4m(tmp_path_factory.mktemp("camera") / "worker.y4m", frame)
    args = CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def app(tmp_path: Path, mosquitto: Mosquitto, face_engine: FaceEngine) -> Iterator[WebApp]:
    """The real server sharing the session's dlib models, with one user per role."""
    runtime = ServerRuntime(web_settings(tmp_path, mosquitto), face_engine=face_engine).start()
    try:
        yield WebApp(runtime=runtime, passwords=create_users(runtime))
    finally:
        runtime.stop()


def table_counts(app: WebApp) -> dict[str, int]:
    with app.sessions() as s:
        return {t.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(t)) or 0
                for t in (Worker, FaceSample, Consent, WorkerPhoto)}


def test_camera_enrollment_consent_first_then_three_samples(app: WebApp, camera_browser: Any) -> None:
    page = app.login(camera_browser, "staff")
    page.goto(app.url + "/enroll")
    # Nothing can be captured before the consent is ticked.
    expect(page.locator("#capture")).to_have_js_property("disabled", True)
    expect(page.locator("#start-camera")).to_be_disabled()
    expect(page.locator("#files")).to_be_disabled()
    expect(page.locator("#save")).to_be_disabled()
    page.fill("#name", "Lin-Manuel Miranda")
    page.fill("#phone", "13900000009")
    page.select_option("#category", "designated_driver")
    expect(page.locator("#save-hint")).to_have_text("The worker's consent must be ticked first.")
    shot(page, "enroll-consent.png")
    page.check("#consent")
    page.check("#allows-photo")
    expect(page.locator("#start-camera")).to_be_enabled()

    page.click("#start-camera")
    expect(page.locator("#snap")).to_be_enabled()
    page.wait_for_function("document.getElementById('video').videoWidth > 0")
    for n in range(1, 4):
        page.click("#snap")
        expect(page.locator("#samples li.ok")).to_have_count(n, timeout=60_000)
    expect(page.locator("#samples li.ok").first).to_contain_text("Good photo: face")
    expect(page.locator("#samples li.refused")).to_have_count(0)
    expect(page.locator("#count")).to_have_text("3 of 3-5 photos taken.")
    expect(page.locator("#duplicate")).to_be_hidden()
    expect(page.locator("#save")).to_be_enabled()
    shot(page, "enroll-samples.png")

    page.click("#save")
    expect(page.locator("#result")).to_contain_text("Lin-Manuel Miranda is enrolled with 3 photos", timeout=30_000)
    worker_id = page.locator("#result").get_attribute("data-worker-id")
    shot(page, "enroll-saved.png")
    # The page is ready for the next worker: consent again first.
    expect(page.locator("#capture")).to_have_js_property("disabled", True)
    expect(page.locator("#samples li")).to_have_count(0)

    with app.sessions() as s:
        worker = s.get(Worker, worker_id)
        assert worker is not None and worker.name == "Lin-Manuel Miranda" and worker.phone == "13900000009"
        assert worker.category == "designated_driver" and worker.enrolled_by == "staff"
        assert s.scalar(sa.select(sa.func.count()).where(FaceSample.worker_id == worker_id)) == 3
        (consent,) = s.scalars(sa.select(Consent).where(Consent.worker_id == worker_id))
        assert consent.allows_photo and consent.recorded_by == "staff"
        photo = s.get(WorkerPhoto, worker_id)
        assert photo is not None and max(load_image(photo.jpeg).shape[:2]) <= 160
        assert s.scalar(sa.select(AuditEvent.actor).where(AuditEvent.target == worker_id)) == "staff"


def test_upload_shows_problems_and_the_duplicate_warning_needs_an_override(
    app: WebApp, camera_browser: Any, faces: Path, tmp_path: Path
) -> None:
    page = app.login(camera_browser, "admin")
    page.goto(app.url + "/enroll")
    page.fill("#name", "Barack Obama")
    page.check("#consent")  # no photo consent: no thumbnail may be kept

    page.set_input_files("#files", str(faces / EX / "_multi_person/two_people.jpg"))
    refused = page.locator("#samples li.refused")
    expect(refused).to_have_count(1, timeout=60_000)
    expect(refused).to_contain_text("faces are in the picture: only the worker should be in front of the camera")
    shot(page, "enroll-refused.png")
    page.set_input_files("#files", [str(faces / EX / f"obama/{n}") for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")])
    expect(page.locator("#samples li.ok")).to_have_count(3, timeout=120_000)
    page.fill("#name", "Barack Obama")
    page.click("#save")
    expect(page.locator("#result")).to_contain_text("Barack Obama is enrolled", timeout=30_000)
    before = table_counts(app)
    assert before["workers"] == 1 and before["worker_photos"] == 0

    # The same face again, under another name: warned before anything is saved.
    page.fill("#name", "B. Obama")
    page.check("#consent")
    page.set_input_files("#files", [str(faces / EX / f"obama/{n}") for n in ("obama1.jpg", "obama-720p.jpg",
                                                                              "obama_small.jpg")])
    expect(page.locator("#samples li.ok")).to_have_count(3, timeout=120_000)
    expect(page.locator("#duplicate")).to_be_visible()
    expect(page.locator("#duplicate-text")).to_contain_text("already enrolled as Barack Obama")
    expect(page.locator("#save")).to_be_disabled()
    shot(page, "enroll-duplicate.png")
    assert table_counts(app) == before
    page.check("#override")
    expect(page.locator("#save")).to_be_enabled()
    page.click("#save")
    expect(page.locator("#result")).to_contain_text("B. Obama is enrolled", timeout=30_000)
    with app.sessions() as s:
        twin = s.scalar(sa.select(Worker).where(Worker.name == "B. Obama"))
        assert twin is not None
        event = s.scalar(sa.select(AuditEvent).where(AuditEvent.target == twin.worker_id))
        assert event is not None and event.actor == "admin" and "duplicate_overridden" in event.detail


def test_sessions_page_roles_and_the_session_picker(app: WebApp, camera_browser: Any) -> None:
    admin = app.login(camera_browser, "admin")
    admin.goto(app.url + "/enroll/sessions")
    admin.fill("input[name=place]", "Chaoyang rest stop")
    admin.fill("input[name=starts_at]", "2026-12-01T09:00")
    admin.fill("input[name=ends_at]", "2026-12-01T08:00")
    admin.check("input[name=staff][value=staff]")
    admin.click("#new-session button[type=submit]")
    expect(admin.locator(".notice.error")).to_have_text("The session must end after it starts.")
    admin.fill("input[name=ends_at]", "2026-12-01T12:00")
    admin.click("#new-session button[type=submit]")
    expect(admin.locator(".notice.ok")).to_contain_text("is created")
    row = admin.locator("#sessions tbody tr").first
    expect(row).to_contain_text("Chaoyang rest stop")
    expect(row).to_contain_text("staff")
    shot(admin, "enroll-sessions.png")
    with app.sessions() as s:
        (session_row,) = s.scalars(sa.select(EnrollmentSession))
        assert session_row.starts_at.hour == 1 and session_row.created_by == "admin"  # 09:00 in Shanghai is 01:00 UTC

    staff = app.login(camera_browser, "staff", language="zh_CN")
    staff.goto(app.url + "/enroll/sessions")
    expect(staff.locator("#sessions tbody tr").first).to_contain_text("Chaoyang rest stop")
    expect(staff.locator("#new-session")).to_have_count(0)  # staff do not create sessions
    staff.goto(app.url + "/enroll")
    expect(staff.locator("#session option")).to_have_count(2)
    expect(staff.locator("#consent-text")).to_contain_text("我同意")
    expect(staff.locator("#save-hint")).to_have_text("必须先勾选工友的同意。")

    auditor = app.login(camera_browser, "auditor")
    assert auditor.goto(app.url + "/enroll").status == 403
