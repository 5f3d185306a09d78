"""`./run evaluate`: the door's FAR/FRR on a 1:N protocol, through the door's own code, on real photos."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.evaluate import EXIT_PROTOCOL, ProtocolError, main, read_protocol
from edge.policy import PolicyConfig
from tests.support.services import REPO

LFW = "lfw_dev"
STRANGERS = "lfw_dev_strangers"
EX = "face_recognition_examples"
HEAD = "role,identity,file\n"

# (role, identity, photo in the shared data). Hu Jintao has two enroll photos (one template each);
# "Joe Biden" is enrolled from a photo of two people, which real enrollment refuses; the third
# genuine probe from the end has no face HOG can find; the strangers are never enrolled.
ROWS = [
    ("enroll", "Hu_Jintao", f"{LFW}/Hu_Jintao/Hu_Jintao_0002.jpg"),
    ("enroll", "Hu_Jintao", f"{LFW}/Hu_Jintao/Hu_Jintao_0004.jpg"),
    ("enroll", "Bill_Clinton", f"{LFW}/Bill_Clinton/Bill_Clinton_0006.jpg"),
    ("enroll", "Natalie_Cole", f"{LFW}/Natalie_Cole/Natalie_Cole_0001.jpg"),
    ("enroll", "Franz_Muentefering", f"{LFW}/Franz_Muentefering/Franz_Muentefering_0001.jpg"),
    ("enroll", "Joe_Biden", f"{EX}/_multi_person/two_people.jpg"),
    ("probe_genuine", "Hu_Jintao", f"{LFW}/Hu_Jintao/Hu_Jintao_0009.jpg"),
    ("probe_genuine", "Bill_Clinton", f"{LFW}/Bill_Clinton/Bill_Clinton_0016.jpg"),
    ("probe_genuine", "Natalie_Cole", f"{LFW}/Natalie_Cole/Natalie_Cole_0003.jpg"),
    ("probe_genuine", "Franz_Muentefering", f"{LFW}/Franz_Muentefering/Franz_Muentefering_0003.jpg"),
    ("probe_genuine", "Joe_Biden", f"{EX}/biden/biden.jpg"),
    ("probe_impostor", "Adam_Freier", f"{STRANGERS}/Adam_Freier/Adam_Freier_0001.jpg"),
    ("probe_impostor", "Brett_Hawke", f"{STRANGERS}/Brett_Hawke/Brett_Hawke_0001.jpg"),
]


def _protocol(folder: Path, faces: Path, rows: list[tuple[str, str, str]], header: str = "role,identity,file") -> Path:
    """A protocol CSV in ``folder`` with copies of the photos beside it (paths relative to the CSV)."""
    lines = [header]
    for role, identity, rel in rows:
        target = folder / "photos" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(faces / rel, target)
        lines.append(f"{role},{identity},photos/{rel}")
    path = folder / "protocol.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.faces
@pytest.mark.models
def test_evaluate_counts_the_door_decisions_and_writes_json_and_plot(
    tmp_path: Path, faces: Path, face_engine, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    protocol = _protocol(tmp_path / "set", faces, ROWS)
    out_json, out_png, out_grid = (tmp_path / "out" / name for name in ("result.json", "det.png", "grid.csv"))
    code = main([str(protocol), "--json", str(out_json), "--plot", str(out_png), "--grid", str(out_grid)],
                engine=face_engine)
    captured = capsys.readouterr()
    assert code == 0, captured.err

    result = json.loads(out_json.read_text())
    assert set(result) == {"far", "frr", "misidentified", "failed_to_enroll", "n_gallery", "n_genuine", "n_impostor"}
    # Four workers enrolled (Hu Jintao from two photos); the two-person photo enrolls nobody.
    assert (result["n_gallery"], result["failed_to_enroll"]) == (4, 1)
    assert (result["n_genuine"], result["n_impostor"]) == (5, 2)
    # Both strangers are kept out; nobody is let in as someone else.
    assert result["far"] == 0.0 and result["misidentified"] == 0
    # Of 5 genuine probes, the one without a face and the one whose worker failed to enroll are
    # false rejects; the other three are let in as themselves.
    assert result["frr"] == pytest.approx(2 / 5)

    out = captured.out
    assert "Joe_Biden: two_people.jpg: 2 faces found" in out
    assert "no face 1" in out and "FRR 40.0%" in out and "FAR 0.0%" in out
    assert "progress" not in out and "evaluate: probes at the door 7/7" in captured.err  # progress on stderr only
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The grid replays the recorded frames through the policy: at the shipped knobs it gives the door's own result.
    policy = PolicyConfig()
    with out_grid.open() as fh:
        rows = list(csv.DictReader(fh))
    here = [r for r in rows if float(r["threshold"]) == policy.threshold and float(r["margin"]) == policy.margin]
    assert len(here) == 1 and float(here[0]["far"]) == result["far"] and float(here[0]["frr"]) == result["frr"]
    # A threshold so low nobody is let in rejects every genuine probe.
    lowest = min(rows, key=lambda r: float(r["threshold"]))
    assert float(lowest["frr"]) >= result["frr"]


def test_protocol_rows_by_role_with_paths_relative_to_the_csv(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("a/1.jpg", "a/2.jpg", "s.jpg"):
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "p.csv"
    path.write_text(
        "file,role,identity,note\na/1.jpg,enroll,A,x\n\na/2.jpg,probe_genuine,A,\ns.jpg,probe_impostor,S,\n"
    )
    p = read_protocol(path)
    assert p.enroll == [("A", tmp_path / "a/1.jpg")] and p.genuine == [("A", tmp_path / "a/2.jpg")]
    assert p.impostor == [("S", tmp_path / "s.jpg")]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("role,identity\nenroll,A\n", "missing column(s) file"),
        ("role,identity,file\nenrol,A,a.jpg\n", "line 2: unknown role 'enrol'"),
        (f"{HEAD}enroll,A,a.jpg\nprobe_genuine,A,missing.jpg\n", "line 3: photo file 'missing.jpg' not found"),
        (f"{HEAD}enroll,A,a.jpg\nprobe_genuine,B,a.jpg\n", "genuine probe a.jpg is of 'B', who has no enroll row"),
        (f"{HEAD}enroll,A,a.jpg\nprobe_impostor,A,a.jpg\n", "impostor probe a.jpg is of 'A', who is enrolled"),
        (f"{HEAD}enroll,A,a.jpg\n", "needs at least one enroll row and one probe row"),
        (f"{HEAD}enroll,,a.jpg\n", "line 2: identity and file must not be empty"),
    ],
)
def test_a_bad_protocol_is_one_clear_line_and_exit_2(
    tmp_path: Path, text: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.jpg").write_bytes(b"not loaded before the protocol is checked")
    path = tmp_path / "protocol.csv"
    path.write_text(text)
    with pytest.raises(ProtocolError, match="protocol.csv"):
        read_protocol(path)
    assert main([str(path), "--plot", str(tmp_path / "det.png")]) == EXIT_PROTOCOL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ProtocolError: ") and words in err[0], err
    assert not (tmp_path / "det.png").exists()


def test_run_evaluate_reports_a_missing_protocol_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    r = subprocess.run(
        [str(REPO / "run"), "evaluate", str(missing)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"ProtocolError: {missing}: cannot be read")


def test_a_bad_station_config_is_reported_like_the_agent_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    protocol = tmp_path / "protocol.csv"
    protocol.write_text("role,identity,file\nenroll,A,a.jpg\nprobe_genuine,A,a.jpg\n")
    config = tmp_path / "station.yaml"
    config.write_text("station_id: s\npolicy: {threshold: 0.95}\n")
    assert main([str(protocol), "--config", str(config), "--plot", str(tmp_path / "det.png")]) == EXIT_PROTOCOL
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ConfigError: policy.threshold: 0.95: Input should be less than or equal to 0.8"]
