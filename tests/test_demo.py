"""`./run demo --once` as a newcomer runs it: the summary line, and nothing left running."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.broker import free_port
from tests.support.services import REPO

pytestmark = [pytest.mark.faces, pytest.mark.models]


def test_demo_once_grants_enrolled_denies_strangers_and_counts_on_the_server(faces: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WAYSTATION_FACES_DIR": str(faces), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--once", "--http-port", str(port), "--data-dir", str(tmp_path / "demo")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"demo: (\d+) granted, (\d+) denied, (\d+) entries recorded on the server", last)
    assert m, f"unexpected last line: {last!r}"
    granted, denied, entries = map(int, m.groups())
    assert granted >= 1 and denied >= 1
    assert entries == granted + denied
    assert "<- unexpected" not in proc.stdout, proc.stdout
    # Nothing is left listening: the HTTP port can be bound again (SO_REUSEADDR
    # passes over TIME_WAIT connections, but Linux still refuses a live listener).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_demo_says_clearly_when_the_sample_data_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "WAYSTATION_FACES_DIR": str(tmp_path / "nowhere"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "demo", "--once"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "sample face data was not found" in proc.stderr
