"""Enrollment by photo upload with the real dlib models on real photos, broadcast over mosquitto."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from core.faces import FaceEngine
from core.imaging import load_image
from models import topics
from models.encoding import EMBEDDING_DIM, FACE_MODEL_ID
from models.messages import GalleryChangeMessage, GalleryOp, decode
from server.config import ServerSettings
from server.gallery import latest_version, vector_from_bytes
from server.runtime import ServerRuntime
from server.tables import FaceSample
from tests.support.services import Mosquitto

from .conftest import TOKEN, Inbox, mqtt_link, start_server

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]

OBAMA = "face_recognition_examples/obama/obama.jpg"
OBAMA2 = "face_recognition_examples/obama/obama2.jpg"
TWO_PEOPLE = "face_recognition_examples/_multi_person/two_people.jpg"


@pytest.fixture
def server(settings: ServerSettings, mosquitto: Mosquitto, face_engine: FaceEngine) -> Iterator[ServerRuntime]:
    """The server sharing the session's loaded dlib models (loading them is the slow part)."""
    runtime = start_server(settings, mosquitto, face_engine=face_engine)
    try:
        yield runtime
    finally:
        runtime.stop()


def _png(color: tuple[int, int, int] = (128, 128, 128), size: tuple[int, int] = (640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _photo(faces: Path, rel: str) -> tuple[str, bytes, str]:
    path = faces / rel
    return (path.name, path.read_bytes(), "image/jpeg")


def _samples(server: ServerRuntime) -> list[FaceSample]:
    assert server.engine is not None
    with sa.orm.Session(server.engine) as session:
        return list(session.scalars(sa.select(FaceSample)))


def test_enroll_by_photos_stores_encodings_and_broadcasts(
    server: ServerRuntime, api: httpx.Client, faces: Path, face_engine: FaceEngine, mosquitto: Mosquitto
) -> None:
    with mqtt_link(mosquitto) as observer:
        inbox = Inbox(observer, topics.GALLERY_CHANGE)
        r = api.post(
            "/api/workers",
            data={"name": "Barack Obama", "phone": "+1 202 456 1111"},
            files=[("photos", _photo(faces, OBAMA)), ("photos", _photo(faces, OBAMA2))],
        )
        assert r.status_code == 201, r.text
        created = r.json()
        message = decode(inbox.get(), GalleryChangeMessage)

    assert created["name"] == "Barack Obama" and created["samples"] == 2
    samples = _samples(server)
    assert len(samples) == 2
    assert all(s.worker_id == created["worker_id"] and s.model_id == FACE_MODEL_ID for s in samples)
    assert all(len(s.vector) == EMBEDDING_DIM * 4 for s in samples)

    # The stored encoding is the enrollment template of the uploaded photo (the photo and its
    # altered copies, see core/templates.py), computed the same way the evaluation does.
    from core.templates import enroll_photo

    expected = enroll_photo(face_engine, faces / OBAMA).vector
    stored = vector_from_bytes(samples[0].vector)
    assert np.linalg.norm(stored - expected) < 1e-5
    # The two photos are the same person (well under the 0.6 match distance) but not the same vector.
    other = vector_from_bytes(samples[1].vector)
    assert 0.0 < np.linalg.norm(stored - other) < 0.6

    change = message.change
    assert (change.op, change.worker_id, change.version) == (GalleryOp.UPSERT, created["worker_id"], created["version"])
    assert change.display_name == "Barack Obama" and change.active
    np.testing.assert_array_equal(change.encodings[0].vector(), stored)
    (listed,) = api.get("/api/workers").json()["items"]
    assert listed["samples"] == 2 and listed["phone"] == "+1 202 456 1111"


def test_bad_photos_are_refused_naming_the_file_and_store_nothing(
    server: ServerRuntime, api: httpx.Client, faces: Path
) -> None:
    cases = [
        ([("photos", ("gray.png", _png(), "image/png"))], "gray.png", "no face"),
        ([("photos", _photo(faces, TWO_PEOPLE))], "two_people.jpg", "2 faces"),
        ([("photos", ("broken.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg", "image/jpeg"))], "broken.jpg", ""),
        ([("photos", ("notes.txt", b"hello", "text/plain"))], "notes.txt", "not an image"),
        # One good photo does not save a bad one: nothing is stored.
        ([("photos", _photo(faces, OBAMA)), ("photos", ("empty.jpg", b"", "image/jpeg"))], "empty.jpg", "empty"),
    ]
    for files, name, words in cases:
        r = api.post("/api/workers", data={"name": "Nobody"}, files=files)
        assert r.status_code == 422, (name, r.text)
        detail = r.json()["detail"]
        assert name in detail and words in detail, detail
    assert api.get("/api/workers").json()["items"] == []
    assert _samples(server) == []
    assert server.engine is not None
    with sa.orm.Session(server.engine) as session:
        assert latest_version(session=session) == 0


def test_photo_form_limits(server: ServerRuntime, api: httpx.Client, faces: Path) -> None:
    one = [("photos", _photo(faces, OBAMA))]
    assert api.post("/api/workers", data={"name": "   "}, files=one).status_code == 422
    assert api.post("/api/workers", data={"name": "x" * 101}, files=one).status_code == 422
    assert api.post("/api/workers", data={"name": "Ok", "phone": "no phone"}, files=one).status_code == 422
    assert api.post("/api/workers", data={"name": "Ok"}).status_code == 422
    six = [("photos", _photo(faces, OBAMA))] * 6
    r = api.post("/api/workers", data={"name": "Ok"}, files=six)
    assert r.status_code == 422 and "1 to 5" in r.json()["detail"]
    assert api.get("/api/workers").json()["items"] == []
    unauthorised = httpx.post(server.url + "/api/workers", data={"name": "Ok"}, files=one)
    assert unauthorised.status_code == 401
    assert TOKEN not in unauthorised.text


def test_oversized_photo_is_refused(
    tmp_path: Path, mosquitto: Mosquitto, faces: Path, face_engine: FaceEngine
) -> None:
    from .conftest import make_settings

    settings = make_settings(tmp_path, mosquitto, max_photo_bytes=50_000)
    with start_server(settings, mosquitto, face_engine=face_engine) as runtime, httpx.Client(
        base_url=runtime.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as api:
        big = faces / OBAMA
        assert big.stat().st_size > 50_000
        r = api.post("/api/workers", data={"name": "Big"}, files=[("photos", _photo(faces, OBAMA))])
        assert r.status_code == 413 and "obama.jpg" in r.json()["detail"]
        assert api.get("/api/workers").json()["items"] == []
