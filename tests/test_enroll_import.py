"""`./run enroll import DIR --csv FILE --report OUT.csv` against a real server, with real photos.

The folder holds real photos from the shared data plus bad files made here
(a truncated JPEG, a text file named .jpg, two real photos pasted side by
side); the CSV has good rows, a duplicate face under another name, a bad
category and a missing file. The report, the database and a re-run (which
must change nothing) are checked.
"""

from __future__ import annotations

import csv
import secrets
import shutil
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.broker import free_port
from core.i18n import translator
from core.imaging import encode_jpeg, load_image, resize
from core.quality import Problem
from enroll.__main__ import app
from enroll.messages import problem_message
from server.config import ServerSettings
from server.db import make_engine, make_sessionmaker
from server.runtime import ServerRuntime
from server.tables import Consent, FaceSample, GalleryChangeRow, Worker, WorkerPhoto
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.faces, pytest.mark.models, pytest.mark.broker]

EX = "face_recognition_examples"
TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def server(tmp_path: Path, mosquitto: Mosquitto, face_engine) -> Iterator[ServerRuntime]:  # noqa: ANN001
    settings = ServerSettings.load(
        None, data_dir=tmp_path / "server", http_port=free_port(), api_token=TOKEN,
        mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
    )
    with ServerRuntime(settings, face_engine=face_engine) as runtime:
        yield runtime


def run_cli(args: list[str], server: ServerRuntime | None = None) -> tuple[int, str, str]:
    url = server.url if server is not None else "http://127.0.0.1:9"
    result = CliRunner().invoke(app, [*args, "--server", url], env={"WAYSTATION_API_TOKEN": TOKEN, "LANG": "C"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def snapshot(server: ServerRuntime) -> dict[str, object]:
    """Everything an import may change, read straight from the server's database."""
    engine = make_engine(server.settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as s:
            workers = {
                w.name: (w.worker_id, w.phone, w.category, w.employer, w.enrollment_session_id, w.valid_until)
                for w in s.scalars(select(Worker))
            }
            return {
                "workers": workers,
                "samples": dict(
                    s.execute(select(FaceSample.worker_id, func.count()).group_by(FaceSample.worker_id)).all()
                ),
                "sample_ids": sorted(s.scalars(select(FaceSample.id))),
                "consents": sorted((c.worker_id, c.text_version, c.allows_photo) for c in s.scalars(select(Consent))),
                "photos": sorted(s.scalars(select(WorkerPhoto.worker_id))),
                "versions": sorted(s.scalars(select(GalleryChangeRow.version))),
            }
    finally:
        engine.dispose()


def read_report(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def side_by_side(a: Path, b: Path) -> bytes:
    """Two real photos pasted next to each other at the same height: a photo with two faces."""
    left, right = load_image(a), load_image(b)
    h = min(left.shape[0], right.shape[0])
    left, right = resize(left, h / left.shape[0])[:h], resize(right, h / right.shape[0])[:h]
    return encode_jpeg(np.ascontiguousarray(np.hstack([left, right])), 95)


@pytest.fixture
def photos(faces: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for src, name in [
        ("obama/obama.jpg", "obama.jpg"),
        ("obama/obama2.jpg", "barry.jpg"),
        ("alex_lacamoire/alex_lacamoire1.jpg", "alex.jpg"),
        ("biden/biden.jpg", "biden1.jpg"),
        ("biden/biden2.jpg", "biden2.jpg"),
        ("kit_harington/john1.jpeg", "kit.jpeg"),
    ]:
        shutil.copyfile(faces / EX / src, folder / name)
    good = (faces / EX / "rose_leslie/img1.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.jpg").write_text("shift notes, not a photo\n")
    (folder / "pair.jpg").write_bytes(side_by_side(faces / EX / "rose_leslie/img1.jpg", faces / EX / "biden/biden.jpg"))
    return folder


def said(problem: Problem) -> str:
    return problem_message(problem, translator("en"))


HEADER = ["name", "phone", "category", "photo", "employer", "allow_photo", "valid_until"]


def test_import_reports_every_row_saves_the_good_ones_and_a_rerun_changes_nothing(
    server: ServerRuntime, photos: Path, tmp_path: Path
) -> None:
    table = write_csv(tmp_path / "workers.csv", [
        HEADER,
        ["Barack Obama", "138 0000 0001", "courier", "obama.jpg", "SF Express", "yes", ""],
        ["Alex Lacamoire", "13800000002", "Food delivery", "alex.jpg", "Meituan", "", "2030-12-31"],
        ["Joe Biden", "13800000003", "sanitation", "biden1.jpg; biden2.jpg", "", "no", ""],
        ["Barry Soetoro", "13800000004", "other", "barry.jpg", "", "", ""],
        ["Missing Person", "13800000005", "courier", "nobody.jpg", "", "", ""],
        ["Broken File", "13800000006", "courier", "broken.jpg", "", "", ""],
        ["Two People", "13800000007", "courier", "pair.jpg", "", "", ""],
        ["Kit Harington", "13800000008", "pilot", "kit.jpeg", "", "", ""],
        ["Shift Notes", "13800000009", "courier", "notes.jpg", "", "", ""],
        ["Rose Leslie", "13800000010", "courier", "kit.jpeg", "", "", "31/12/2030"],
    ])
    report = tmp_path / "report.csv"
    args = ["import", str(photos), "--csv", str(table), "--report", str(report), "--consent-version", "2026-1",
            "--lang", "en"]
    code, out, err = run_cli(args, server)
    assert code == 1, (out, err)  # some rows were not enrolled
    rows = read_report(report)
    assert rows[0] == ["file", "status", "reason"]
    assert [r[:2] for r in rows[1:]] == [
        ["obama.jpg", "enrolled"], ["alex.jpg", "enrolled"], ["biden1.jpg; biden2.jpg", "enrolled"],
        ["barry.jpg", "duplicate"], ["nobody.jpg", "rejected"], ["broken.jpg", "rejected"],
        ["pair.jpg", "rejected"], ["kit.jpeg", "rejected"], ["notes.jpg", "rejected"], ["kit.jpeg", "rejected"],
    ], rows
    db = snapshot(server)
    workers = db["workers"]
    assert isinstance(workers, dict) and set(workers) == {"Barack Obama", "Alex Lacamoire", "Joe Biden"}
    obama_id = workers["Barack Obama"][0]
    reasons = [r[2] for r in rows[1:]]
    assert reasons[0] == f"enrolled as {obama_id} (1 photo)"
    assert reasons[2] == f"enrolled as {workers['Joe Biden'][0]} (2 photos)"
    assert "Barack Obama" in reasons[3] and obama_id in reasons[3] and "nothing was saved" in reasons[3]
    assert "nobody.jpg" in reasons[4] and "not found" in reasons[4]
    # The server's own sentences (enroll/messages.py), the same the web page shows.
    assert reasons[5] == "broken.jpg: " + said(Problem("unreadable_image"))
    assert reasons[6] == "pair.jpg: " + said(Problem("several_faces", {"faces": 2}))
    assert "'pilot'" in reasons[7] and "courier" in reasons[7]
    assert reasons[8] == "notes.jpg: " + said(Problem("unreadable_image"))
    assert reasons[9] == "valid_until '31/12/2030' is not a date (YYYY-MM-DD)"
    assert "10 rows: 3 enrolled, 1 duplicate, 6 rejected" in out
    assert "100%" in err, "no progress bar on stderr"

    # What was saved: normalised phone and category, employer, consent before face data, the thumbnail only
    # where the worker allowed it, one sample per photo, one gallery change per worker.
    assert workers["Barack Obama"][1:4] == ("13800000001", "courier", "SF Express")
    assert workers["Alex Lacamoire"][1:4] == ("13800000002", "food_delivery", "Meituan")
    # The last day of access, 31 December, ends at midnight China time.
    assert workers["Alex Lacamoire"][5] == datetime(2030, 12, 31, 16, 0, tzinfo=timezone.utc)
    assert workers["Barack Obama"][5] is None
    assert db["samples"] == {obama_id: 1, workers["Alex Lacamoire"][0]: 1, workers["Joe Biden"][0]: 2}
    assert db["consents"] == sorted(
        (workers[n][0], "2026-1", n == "Barack Obama") for n in ("Barack Obama", "Alex Lacamoire", "Joe Biden")
    )
    assert db["photos"] == [obama_id]
    assert len(db["versions"]) == 3

    # A re-run: the enrolled rows are recognised by phone and name, nothing is sent again, nothing changes.
    report2 = tmp_path / "report2.csv"
    code2, out2, _ = run_cli([*args[:5], str(report2), *args[6:]], server)
    assert code2 == 1
    rows2 = read_report(report2)
    assert [r[:2] for r in rows2] == [r[:2] for r in rows]
    for again in (rows2[1], rows2[2], rows2[3]):
        assert again[2].startswith("already enrolled as ") and "nothing changed" in again[2]
    assert rows2[4:] == rows[4:]
    assert snapshot(server) == db


def test_import_all_enrolled_exits_0_reads_gb18030_and_refuses_a_taken_phone(
    server: ServerRuntime, photos: Path, tmp_path: Path
) -> None:
    # Chinese Excel saves CSV as GB18030; consent per row from a column, no --consent-version.
    table = write_csv(tmp_path / "excel.csv", [
        ["Name", "Phone", "Category", "Photo", "Consent_Version"],
        ["奥巴马", "+86 138-0000-0011", "designated driver", "obama.jpg", "2026-1"],
    ], encoding="gb18030")
    report = tmp_path / "r.csv"
    # An unknown enrollment session is refused before any photo is sent.
    code, _, err = run_cli(["import", str(photos), "--csv", str(table), "--report", str(report), "--session", "42",
                            "--lang", "en"], server)
    assert code == 2 and "no enrollment session 42" in err and not report.exists()
    now = datetime.now(timezone.utc)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        held = admin.post("/api/enrollment/sessions", json={
            "place": "Rest station 3", "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=3)).isoformat(),
        })
        session_id = held.raise_for_status().json()["session_id"]

    code, out, err = run_cli(["import", str(photos), "--csv", str(table), "--report", str(report),
                              "--session", str(session_id)], server)
    assert code == 0, (out, err)
    assert read_report(report)[1][1] == "enrolled"
    db = snapshot(server)
    assert isinstance(db["workers"], dict)
    worker_id, phone, category, _, enrolled_at, _ = db["workers"]["奥巴马"]
    assert (phone, category, enrolled_at) == ("+8613800000011", "designated_driver", session_id)
    assert db["consents"] == [(worker_id, "2026-1", False)]

    # The same phone number under another name is someone else's: refused, nothing sent.
    taken = write_csv(tmp_path / "taken.csv", [
        ["name", "phone", "category", "photo"], ["Alex Lacamoire", "+8613800000011", "courier", "alex.jpg"],
    ])
    code, _, _ = run_cli(["import", str(photos), "--csv", str(taken), "--report", str(report),
                          "--consent-version", "2026-1", "--lang", "en"], server)
    assert code == 1
    assert read_report(report)[1] == ["alex.jpg", "rejected",
                                      f"phone number +8613800000011 already belongs to 奥巴马 ({worker_id})"]
    assert snapshot(server) == db


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_import_usage_errors_exit_2_and_say_what_to_fix(tmp_path: Path, lang: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    report = tmp_path / "report.csv"
    no_photo = write_csv(tmp_path / "a.csv", [["name", "phone", "category"], ["A", "13800000001", "courier"]])
    code, _, err = run_cli(["import", str(photos), "--csv", str(no_photo), "--report", str(report),
                            "--consent-version", "2026-1", "--lang", lang])
    assert code == 2
    assert "photo" in err and ("no column" in err if lang == "en" else "缺少列" in err)

    code, _, err = run_cli(["import", str(photos), "--csv", str(tmp_path / "missing.csv"), "--report", str(report),
                            "--consent-version", "2026-1", "--lang", lang])
    assert code == 2 and "missing.csv" in err
    assert ("cannot read the CSV file" in err) if lang == "en" else ("无法读取 CSV 文件" in err)

    good = write_csv(tmp_path / "b.csv", [["name", "phone", "category", "photo"],
                                          ["A", "13800000001", "courier", "a.jpg"]])
    code, _, err = run_cli(["import", str(photos), "--csv", str(good), "--report", str(report), "--lang", lang])
    assert code == 2 and "--consent-version" in err, "consent is required before any face data"
    assert not report.exists(), "a usage error must not leave a report behind"
