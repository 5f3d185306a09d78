"""`./run enroll add` against a real server, with real photos."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.broker import free_port
from server.config import ServerSettings
from server.runtime import ServerRuntime
from tests.support.services import REPO

pytestmark = [pytest.mark.faces, pytest.mark.models, pytest.mark.broker]
EX = "face_recognition_examples"


def _run(args: list[str], url: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WAYSTATION_API_URL": url, "WAYSTATION_API_TOKEN": token, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "enroll", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_enroll_add_sends_encodings_and_refuses_bad_photos(faces: Path, face_engine, mosquitto, tmp_path: Path) -> None:  # noqa: ANN001
    token = secrets.token_urlsafe(24)
    settings = ServerSettings.load(
        None, data_dir=tmp_path, http_port=free_port(), api_token=token, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port
    )
    with ServerRuntime(settings, face_engine=face_engine) as server:
        ok = _run(["add", "--name", "Rose Leslie", str(faces / EX / "rose_leslie/img1.jpg"),
                   str(faces / EX / "rose_leslie/img2.jpg")], server.url, token)
        assert ok.returncode == 0, ok.stderr
        assert "enrolled Rose Leslie" in ok.stdout and "2 samples" in ok.stdout

        group = _run(["add", "--name", "Two People", str(faces / EX / "_multi_person/two_people.jpg")], server.url, token)
        assert group.returncode == 1
        assert "2 faces found" in group.stdout and "nothing was saved" in group.stderr

        junk = tmp_path / "junk.jpg"
        junk.write_text("not a photo")
        bad = _run(["add", "--name", "Junk", str(junk)], server.url, token)
        assert bad.returncode == 1 and "not an image file" in bad.stdout

        wrong = _run(["add", "--name", "Kit", str(faces / EX / "kit_harington/john1.jpeg")], server.url, "x" * 24)
        assert wrong.returncode == 1 and "401" in wrong.stderr

        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
            workers = api.get("/api/workers").raise_for_status().json()
        names = [w["name"] for w in (workers["items"] if isinstance(workers, dict) else workers)]
        assert names == ["Rose Leslie"], "refused enrollments must not store anything"
