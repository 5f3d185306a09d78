"""The enrollment API over real HTTP: a real server (SQLite file, uvicorn, mosquitto), real models, real photos.

Bad input of every kind named in issue 6 (item 5) gets a clear 422 and
changes nothing; a duplicate face is refused with "already enrolled as …"
before anything is saved; a withdrawal of consent reaches a station's
enrollment cache over MQTT.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from core.faces import FaceEngine
from core.imaging import load_image
from edge.config import EdgeSettings
from edge.gallery import GalleryHolder
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from enroll.messages import CONSENT_TEXT_VERSION
from models import topics
from models.encoding import FACE_MODEL_ID, FaceEncoding
from models.messages import GalleryChangeMessage, decode
from server import users
from server.config import ServerSettings
from server.db import make_sessionmaker
from server.runtime import ServerRuntime
from server.tables import AuditEvent, Consent, FaceSample, GalleryChangeRow, Role, Worker, WorkerPhoto
from tests.support.services import Mosquitto

from .conftest import TOKEN, Inbox, mqtt_link, start_server, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"
TABLES = (Worker, FaceSample, Consent, WorkerPhoto, AuditEvent, GalleryChangeRow)
CONSENT = {"text_version": CONSENT_TEXT_VERSION, "allows_photo": True}


@pytest.fixture
def server(settings: ServerSettings, mosquitto: Mosquitto, face_engine: FaceEngine) -> Iterator[ServerRuntime]:
    runtime = start_server(settings, mosquitto, face_engine=face_engine)
    try:
        yield runtime
    finally:
        runtime.stop()


def counts(server: ServerRuntime) -> dict[str, int]:
    assert server.engine is not None
    with make_sessionmaker(server.engine)() as session:
        return {t.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(t)) or 0 for t in TABLES}


def sample(api: httpx.Client, data: bytes, name: str = "photo.jpg", headers: dict[str, str] | None = None) -> httpx.Response:
    return api.post("/api/enrollment/samples", files={"photo": (name, data, "image/jpeg")}, headers=headers)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def enroll_body(name: str, *samples: dict, **extra: object) -> dict:
    return {"name": name, "consent": CONSENT, "encodings": [s["encoding"] for s in samples],
            "thumbnail_b64": samples[0]["thumbnail_b64"], **extra}


def test_samples_then_enrollment_then_duplicate_warning(
    server: ServerRuntime, api: httpx.Client, faces: Path, mosquitto: Mosquitto
) -> None:
    first = sample(api, (faces / EX / "obama/obama.jpg").read_bytes())
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["ok"] and body["problems"] == [] and body["duplicate"] is None and body["face_px"] >= 60
    assert FaceEncoding.model_validate(body["encoding"]).model == FACE_MODEL_ID
    thumb = load_image(base64.b64decode(body["thumbnail_b64"]))
    assert max(thumb.shape[:2]) <= 160

    with mqtt_link(mosquitto) as observer:
        inbox = Inbox(observer, topics.GALLERY_CHANGE)
        created = api.post("/api/enrollment/workers", json=enroll_body(
            "Barack Obama", body, phone="+86 138 0000 0002", category="food_delivery", employer="Meituan"))
        assert created.status_code == 201, created.text
        worker = created.json()
        change = decode(inbox.get(), GalleryChangeMessage).change
    assert worker["samples"] == 1 and worker["photo_kept"] is True
    assert change.worker_id == worker["worker_id"] and change.version == worker["version"]
    assert len(change.encodings) == 1

    # Another photo of the same man: the sample already warns, and the enrollment is refused.
    second = sample(api, (faces / EX / "obama/obama2.jpg").read_bytes()).json()
    assert second["ok"] and second["duplicate"]["worker_id"] == worker["worker_id"]
    assert second["duplicate"]["name"] == "Barack Obama"
    before = counts(server)
    refused = api.post("/api/enrollment/workers", json=enroll_body("B. Obama", second), headers={"Accept-Language": "en"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == "This face is already enrolled as Barack Obama."
    assert refused.json()["duplicate_of"]["worker_id"] == worker["worker_id"]
    chinese = api.post("/api/enrollment/workers", json=enroll_body("B. Obama", second),
                       headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert chinese.status_code == 409 and chinese.json()["detail"] == "这张人脸已登记为 Barack Obama。"
    assert counts(server) == before
    # An explicit override saves it.
    overridden = api.post("/api/enrollment/workers", json=enroll_body("B. Obama", second, allow_duplicate=True))
    assert overridden.status_code == 201, overridden.text


def test_refusals_change_nothing(server: ServerRuntime, api: httpx.Client, faces: Path) -> None:
    good = sample(api, (faces / EX / "biden/biden.jpg").read_bytes()).json()
    assert good["ok"]
    before = counts(server)
    no_consent = enroll_body("Joe Biden", good)
    del no_consent["consent"]
    cases = [
        (422, no_consent, "consent"),
        (422, enroll_body("Joe Biden", good, consent={"text_version": "0-unknown"}), "0-unknown"),
        (422, enroll_body("Joe Biden", good, category="astronaut"), "astronaut"),
        (422, enroll_body("Joe Biden", good, session_id=12345), "12345"),
        (422, enroll_body("Joe Biden", good, valid_until="2001-01-01T00:00:00Z"), "future"),
        (422, enroll_body("Joe Biden", good, thumbnail_b64="!!not base64!!"), "base64"),
        (422, enroll_body("Joe Biden", good, thumbnail_b64=base64.b64encode(b"not a jpeg").decode()), "photo"),
        (422, {**enroll_body("Joe Biden", good), "encodings": []}, "encodings"),
        (422, {**enroll_body("Joe Biden", good), "encodings": [good["encoding"]] * 6}, "encodings"),
        (422, {**enroll_body("Joe Biden", good), "encodings": [{**good["encoding"], "model": "other"}]}, "model"),
        (422, {**enroll_body("Joe Biden", good), "colour": "red"}, "colour"),
    ]
    for code, payload, words in cases:
        reply = api.post("/api/enrollment/workers", json=payload, headers={"Accept-Language": "en"})
        assert reply.status_code == code, (payload.keys(), reply.text)
        assert words in reply.text, reply.text
    assert counts(server) == before == {t.__tablename__: 0 for t in TABLES}


def _truncated(faces: Path) -> bytes:
    data = (faces / EX / "obama/obama.jpg").read_bytes()
    return data[: len(data) // 2]


def _corrupt(faces: Path) -> bytes:
    """A JPEG's start-of-image marker followed by noise: it claims to be a JPEG and is not."""
    data = (faces / EX / "obama/obama.jpg").read_bytes()
    return data[:4] + np.random.default_rng(6).integers(0, 256, len(data) - 4, dtype=np.uint8).tobytes()


def _transparent(faces: Path) -> bytes:
    """Obama's RGBA portrait with every pixel made fully transparent: nothing is left to see."""
    image = Image.open(faces / EX / "obama/32bit.png").convert("RGBA")
    image.putalpha(0)
    return png(image)


def _bomb() -> bytes:
    """A valid PNG of 20,000 x 20,000 pixels in a few KB (a decompression bomb)."""
    width = height = 20_000
    raw = zlib.compress(b"\x00" * ((width // 8 + 1) * 64), 9)  # only 64 rows: the header is what counts

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


BAD_FILES = {
    "truncated": (_truncated, "unreadable_image"),
    "corrupt": (_corrupt, "unreadable_image"),
    "not an image": (lambda _f: b"name,phone\nObama,555\n", "unreadable_image"),
    "empty": (lambda _f: b"", "unreadable_image"),
    "decompression bomb": (lambda _f: _bomb(), "image_too_large"),
    "fully transparent PNG": (lambda f: _transparent(f), "no_face"),
    "tiny face": (lambda f: png(Image.open(f / EX / "obama/obama.jpg").reduce(6)), "too_small"),
    "two faces": (lambda f: (f / EX / "_multi_person/two_people.jpg").read_bytes(), "several_faces"),
    "no face": (lambda f: png(Image.open(f / EX / "obama/obama.jpg").crop((0, 700, 910, 1137))), "no_face"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_input_gets_a_clear_422_and_stores_nothing(
    kind: str, server: ServerRuntime, api: httpx.Client, faces: Path
) -> None:
    make, code = BAD_FILES[kind]
    before = counts(server)
    reply = sample(api, make(faces), headers={"Accept-Language": "en"})
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert body["ok"] is False and body["encoding"] is None and body["thumbnail_b64"] is None
    assert [p["code"] for p in body["problems"]][:1] == [code]
    assert body["detail"] and body["detail"] == " ".join(p["message"] for p in body["problems"])
    assert "Traceback" not in reply.text and len(body["detail"]) < 400
    zh = sample(api, make(faces), headers={"Accept-Language": "zh-CN"}).json()
    assert zh["problems"][0]["code"] == code and zh["detail"] != body["detail"]  # the same refusal, in Chinese
    assert counts(server) == before


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16"])
def test_alpha_grayscale_and_16_bit_photos_are_read_correctly(
    mode: str, api: httpx.Client, faces: Path
) -> None:
    photo = Image.open(faces / EX / "obama/obama.jpg")
    if mode == "RGBA":
        converted = photo.convert("RGBA")
        converted.putalpha(Image.new("L", photo.size, 255))
    elif mode == "L":
        converted = photo.convert("L")
    else:
        converted = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    data = png(converted)
    assert Image.open(io.BytesIO(data)).mode == mode
    reply = sample(api, data, "photo.png")
    assert reply.status_code == 200, reply.text
    assert reply.json()["ok"] and reply.json()["encoding"] is not None


def test_oversized_upload_is_refused_with_413(tmp_path: Path, mosquitto: Mosquitto, face_engine: FaceEngine) -> None:
    from .conftest import make_settings

    runtime = start_server(make_settings(tmp_path, mosquitto, max_photo_bytes=4096), mosquitto, face_engine=face_engine)
    try:
        with httpx.Client(base_url=runtime.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
            reply = sample(api, b"\xff\xd8" + bytes(10_000), headers={"Accept-Language": "en"})
            assert reply.status_code == 413 and reply.json()["problems"][0]["code"] == "image_too_large"
            assert "too large" in reply.json()["detail"]
    finally:
        runtime.stop()


def _signed_in(server: ServerRuntime, username: str, role: Role) -> httpx.Client:
    """A browser-like client of a real web session (cookie + CSRF header), as the enrollment page is."""
    assert server.engine is not None
    with make_sessionmaker(server.engine)() as session:
        user = users.create_user(session, username=username, password="correct horse battery", role=role,
                                 language="zh_CN")
        session.commit()
        token = users.start_session(session, user=user, hours=1, remote_addr="127.0.0.1")
        csrf = users.session_user(session, token)[1].csrf_token  # type: ignore[index]
    return httpx.Client(base_url=server.url, cookies={"ws_session": token}, headers={"X-CSRF-Token": csrf}, timeout=60)


def test_sessions_and_roles(server: ServerRuntime, api: httpx.Client, faces: Path) -> None:
    staff = _signed_in(server, "li", Role.STAFF)
    auditor = _signed_in(server, "zhao", Role.AUDITOR)
    try:
        body = {"place": "Chaoyang rest stop", "starts_at": "2026-12-01T09:00:00+08:00",
                "ends_at": "2026-12-01T12:00:00+08:00", "staff": ["li"]}
        created = api.post("/api/enrollment/sessions", json=body)
        assert created.status_code == 201, created.text
        info = created.json()
        assert info["staff"] == ["li"] and info["enrolled"] == 0 and info["created_by"] == "api-token"
        refused = api.post("/api/enrollment/sessions", json={**body, "ends_at": body["starts_at"]},
                           headers={"Accept-Language": "en"})
        assert refused.status_code == 422 and "end after" in refused.json()["detail"]
        assert api.post("/api/enrollment/sessions", json={**body, "staff": ["zhao"]}).status_code == 422
        assert api.post("/api/enrollment/sessions", json={**body, "ends_at": "2026-12-01T12:00:00"}).status_code == 422

        # Staff enroll (in their own language, Chinese) but do not create sessions; auditors do neither.
        assert staff.get("/api/enrollment/sessions").json()["items"][0]["session_id"] == info["session_id"]
        assert staff.post("/api/enrollment/sessions", json=body).status_code == 403
        two = staff.post("/api/enrollment/samples", files={"photo": (
            "g.jpg", (faces / EX / "_multi_person/two_people.jpg").read_bytes(), "image/jpeg")})
        assert two.status_code == 422 and "只能有登记的工友一人" in two.json()["detail"]
        good = staff.post("/api/enrollment/samples", files={"photo": (
            "b.jpg", (faces / EX / "biden/biden.jpg").read_bytes(), "image/jpeg")}).json()
        no_csrf = httpx.post(server.url + "/api/enrollment/workers", cookies=staff.cookies,
                             json=enroll_body("Joe Biden", good, session_id=info["session_id"]))
        assert no_csrf.status_code == 403
        saved = staff.post("/api/enrollment/workers", json=enroll_body("Joe Biden", good, session_id=info["session_id"]))
        assert saved.status_code == 201, saved.text
        assert api.get("/api/enrollment/sessions").json()["items"][0]["enrolled"] == 1
        assert auditor.get("/api/enrollment/sessions").status_code == 403
        assert auditor.post("/api/enrollment/samples", files={"photo": ("x.jpg", b"x", "image/jpeg")}).status_code == 403
        with httpx.Client(base_url=server.url, timeout=10) as anonymous:
            assert anonymous.get("/api/enrollment/sessions").status_code == 401
        assert server.engine is not None
        with make_sessionmaker(server.engine)() as session:
            worker = session.get(Worker, saved.json()["worker_id"])
            assert worker is not None and worker.enrolled_by == "li" and worker.enrollment_session_id == info["session_id"]
    finally:
        staff.close()
        auditor.close()


def test_withdrawal_reaches_a_station_over_mqtt(
    server: ServerRuntime, api: httpx.Client, faces: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    api.post("/api/stations", json={"station_id": "st-w", "name": "Rest stop W"}).raise_for_status()
    edge = EdgeSettings.build(station_id="st-w", data_dir=tmp_path / "edge",
                              mqtt={"host": mosquitto.host, "port": mosquitto.port})
    store = EdgeStore.open(edge.data_dir)
    holder = GalleryHolder()
    sync = StationSync(edge, store, build_link(edge), gallery=holder)
    sync.start()
    try:
        taken = sample(api, (faces / EX / "obama/obama.jpg").read_bytes()).json()
        worker = api.post("/api/enrollment/workers", json=enroll_body("Barack Obama", taken)).json()
        wid = worker["worker_id"]
        assert holder.wait_for(lambda g: wid in g.identities, 20), "the enrollment did not reach the station"

        reply = api.post(f"/api/workers/{wid}/consent/withdraw", headers={"Accept-Language": "en"})
        assert reply.status_code == 200, reply.text
        assert "Barack Obama" in reply.json()["message"] and reply.json()["version"] > worker["version"]
        assert holder.wait_for(lambda g: wid not in g.identities, 20), "the station still recognises the worker"
        wait_until(lambda: store.worker(wid) is not None and store.worker(wid)["encodings"] == 0, 20,
                   "the station's cache to drop the encodings")
        listed = {w["worker_id"]: w for w in api.get("/api/workers").json()["items"]}
        assert listed[wid]["samples"] == 0
        assert counts(server)["worker_photos"] == 0
        again = api.post(f"/api/workers/{wid}/consent/withdraw")
        assert again.status_code == 409
        assert api.post("/api/workers/nobody/consent/withdraw").status_code == 404
    finally:
        sync.stop()
        store.close()
