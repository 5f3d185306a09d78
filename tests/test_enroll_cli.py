"""`./run enroll add` and `./run enroll camera` as staff run them (a subprocess), against a real server.

Real photos from the shared data; the camera is a real video clip from the
shared data played at its own speed, as a camera would deliver it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core.broker import free_port
from enroll.messages import PROBLEMS
from server.config import ServerSettings
from server.db import make_engine, make_sessionmaker
from server.runtime import ServerRuntime
from server.tables import Consent, FaceSample, Worker, WorkerPhoto
from tests.support.services import REPO, Mosquitto

pytestmark = [pytest.mark.faces, pytest.mark.models, pytest.mark.broker]
EX = "face_recognition_examples"
TOKEN = secrets.token_urlsafe(24)
CLIP = "videos/face_recognition/short_hamilton_clip.mp4"  # Lin-Manuel Miranda faces the camera from ~3 s to ~7 s


@pytest.fixture
def server(tmp_path: Path, mosquitto: Mosquitto, face_engine) -> Iterator[ServerRuntime]:  # noqa: ANN001
    settings = ServerSettings.load(
        None, data_dir=tmp_path / "server", http_port=free_port(), api_token=TOKEN,
        mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
    )
    with ServerRuntime(settings, face_engine=face_engine) as runtime:
        yield runtime


def enroll(
    args: list[str], url: str, token: str = TOKEN, lang: str = "en_US.UTF-8"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WAYSTATION_API_URL": url, "WAYSTATION_API_TOKEN": token, "PYTHONPATH": str(REPO),
           "LANG": lang}
    env.pop("LC_ALL", None)
    return subprocess.run([sys.executable, "-m", "enroll", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def saved(server: ServerRuntime) -> dict[str, dict[str, object]]:
    """Per worker name: phone, category, employer, consents, samples, photo kept — from the database."""
    engine = make_engine(server.settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as s:
            out: dict[str, dict[str, object]] = {}
            for w in s.scalars(select(Worker)):
                out[w.name] = {
                    "worker_id": w.worker_id, "phone": w.phone, "category": w.category, "employer": w.employer,
                    "consents": [(c.text_version, c.allows_photo) for c in
                                 s.scalars(select(Consent).where(Consent.worker_id == w.worker_id))],
                    "samples": len(s.scalars(select(FaceSample.id).where(FaceSample.worker_id == w.worker_id)).all()),
                    "photo": s.get(WorkerPhoto, w.worker_id) is not None,
                }
            return out
    finally:
        engine.dispose()


def test_add_needs_consent_saves_with_it_and_refuses_bad_photos(
    server: ServerRuntime, faces: Path, tmp_path: Path
) -> None:
    rose = [str(faces / EX / "rose_leslie/img1.jpg"), str(faces / EX / "rose_leslie/img2.jpg")]
    who = ["--name", "Rose Leslie", "--phone", "13900000001", "--category", "sanitation", "--employer", "City works"]

    no_consent = enroll(["add", *who, *rose], server.url)
    assert no_consent.returncode == 2
    assert "consent" in no_consent.stderr and "--consent-version" in no_consent.stderr
    assert saved(server) == {}, "nothing may be stored without consent"

    # Staff show the worker the consent text first, in their language; its version is what --consent-version takes.
    text = enroll(["consent"], server.url, lang="zh_CN.UTF-8")
    assert text.returncode == 0 and "版本 2026-1" in text.stdout and "人脸" in text.stdout
    unknown = enroll(["add", *who, "--consent-version", "2019", *rose], server.url)
    assert unknown.returncode == 2 and "'2019'" in unknown.stderr and "2026-1" in unknown.stderr

    ok = enroll(["add", *who, "--consent-version", "2026-1", "--allow-photo", *rose], server.url)
    assert ok.returncode == 0, ok.stderr
    assert "enrolled Rose Leslie" in ok.stdout and "2 samples" in ok.stdout
    assert "img1.jpg: ok" in ok.stdout and "img2.jpg: ok" in ok.stdout
    rose_row = saved(server)["Rose Leslie"]
    assert rose_row["phone"] == "13900000001" and rose_row["category"] == "sanitation"
    assert rose_row["employer"] == "City works" and rose_row["samples"] == 2
    assert rose_row["consents"] == [("2026-1", True)] and rose_row["photo"] is True

    group = enroll(["add", "--name", "Two People", "--consent-version", "2026-1",
                    str(faces / EX / "_multi_person/two_people.jpg")], server.url)
    assert group.returncode == 1
    assert "two_people.jpg: refused" in group.stdout and "nothing was saved" in group.stderr

    junk = tmp_path / "junk.jpg"
    junk.write_text("not a photo")
    bad = enroll(["add", "--name", "Junk", "--consent-version", "2026-1", str(junk)], server.url)
    assert bad.returncode == 1 and "junk.jpg: refused" in bad.stdout

    kit = str(faces / EX / "kit_harington/john1.jpeg")
    wrong = enroll(["add", "--name", "Kit", "--consent-version", "2026-1", kit],
                   server.url, token="x" * 24)
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert set(saved(server)) == {"Rose Leslie"}, "refused enrollments must not store anything"


def test_add_warns_of_a_duplicate_face_and_speaks_chinese(server: ServerRuntime, faces: Path) -> None:
    first = enroll(["add", "--name", "Kit Harington", "--consent-version", "2026-1",
                    str(faces / EX / "kit_harington/john1.jpeg")], server.url)
    assert first.returncode == 0, first.stderr
    kit_id = saved(server)["Kit Harington"]["worker_id"]

    # The same face under another name: refused before anything is saved, naming who it is.
    again = enroll(["add", "--name", "Jon Snow", "--consent-version", "2026-1",
                    str(faces / EX / "kit_harington/john2.jpeg")], server.url)
    assert again.returncode == 1
    assert "already enrolled as Kit Harington" in again.stderr and str(kit_id) in again.stderr
    assert set(saved(server)) == {"Kit Harington"}

    # Staff who know it is another person can say so; in Chinese (LANG=zh_CN.UTF-8).
    forced = enroll(["add", "--name", "Jon Snow", "--consent-version", "2026-1", "--allow-duplicate",
                     str(faces / EX / "kit_harington/john2.jpeg")], server.url, lang="zh_CN.UTF-8")
    assert forced.returncode == 0, forced.stderr
    assert "已登记 Jon Snow" in forced.stdout
    assert set(saved(server)) == {"Kit Harington", "Jon Snow"}


def test_camera_takes_varied_samples_from_a_video_and_saves(server: ServerRuntime, faces: Path) -> None:
    clip = str(faces / CLIP)
    # A generous --timeout: on a loaded 2-core CI machine each sample waits for the server's template.
    run = enroll(["camera", "--video", clip, "--name", "Lin-Manuel Miranda", "--consent-version", "2026-1", "--yes",
                  "--samples", "3", "--timeout", "240"], server.url)
    assert run.returncode == 0, run.stderr
    assert "3 samples taken" in run.stdout and "enrolled Lin-Manuel Miranda" in run.stdout
    # Live feedback: one line per change when stderr is not a terminal, counting up to the last sample.
    # The clip opens on a face too far away: the first line says so, in the server's own words.
    feedback = run.stderr.splitlines()
    too_small = PROBLEMS["too_small"].split(" (")[0]
    assert feedback[0].startswith(f"[0/3] {too_small} ("), run.stderr
    assert "[3/3] Done." in feedback
    assert saved(server)["Lin-Manuel Miranda"]["samples"] == 3

    # The same face again: warned before anything is saved; --yes does not override the warning.
    twice = enroll(["camera", "--video", clip, "--name", "Someone Else", "--consent-version", "2026-1", "--yes",
                    "--timeout", "240"], server.url)
    assert twice.returncode == 1
    assert "already enrolled as Lin-Manuel Miranda" in twice.stdout and "nothing was saved" in twice.stderr
    assert set(saved(server)) == {"Lin-Manuel Miranda"}


def test_camera_usage_errors(server: ServerRuntime) -> None:
    gone = enroll(["camera", "--device", "97", "--name", "X", "--consent-version", "2026-1", "--yes"], server.url)
    assert gone.returncode == 1 and "camera 97 cannot be opened" in gone.stderr
    both = enroll(["camera", "--name", "X", "--consent-version", "2026-1"], server.url)
    assert both.returncode == 2 and "--device" in both.stderr
    no_consent = enroll(["camera", "--device", "0", "--name", "X"], server.url)
    assert no_consent.returncode == 2 and "--consent-version" in no_consent.stderr
    assert saved(server) == {}


def test_enroll_time_bench_runs_and_ends_with_its_json(faces: Path) -> None:
    """bench/enroll_time.py (the figure in docs/enrollment.md) still runs: a smoke test, no timing assertion."""
    env = {**os.environ, "WAYSTATION_FACES_DIR": str(faces), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "bench.enroll_time", "--runs", "1"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["video"] == "head-pose-face-detection-male.gif" and len(last["runs"]) == 1
    run = last["runs"][0]
    assert run["samples"] == 3 and run["frames_checked"] >= 3
    assert 0 < run["server_sample_s"] < run["seconds"] == last["median_s"]
    assert "saved" in r.stdout and "after the camera started" in r.stdout
