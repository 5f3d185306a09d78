"""Real services for tests: a mosquitto process, the embedded broker, the face data.

A test that needs something missing is skipped on a developer's machine with a
sentence saying what to install, and *fails* when WAYSTATION_REQUIRE_ALL=1
(set by .ci/run), so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from core.broker import free_port

REPO = Path(__file__).resolve().parents[2]
REQUIRE_ALL = os.environ.get("WAYSTATION_REQUIRE_ALL") == "1"


def need(condition: bool, what: str) -> None:
    """Skip (or fail under WAYSTATION_REQUIRE_ALL=1) unless condition holds."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required for this test but missing: {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def faces_dir() -> Path:
    default = REPO.parent / "shared" / "data" / "faces"
    path = Path(os.environ.get("WAYSTATION_FACES_DIR", default))
    need((path / "MANIFEST.md").is_file(), f"the shared face data at {path} (set WAYSTATION_FACES_DIR)")
    return path


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """Debian's mosquitto as a real process on 127.0.0.1, restartable on the same port."""

    def __init__(self, workdir: Path, *, extra_config: str = "") -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        need(exe is not None, "Debian's mosquitto (apt-get install mosquitto)")
        self.exe = str(exe)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        persist = workdir / "persist"
        persist.mkdir(exist_ok=True)
        user = "user root\n" if os.geteuid() == 0 else ""
        base = (
            f"{user}listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {persist}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"log_dest file {self.log}\n"
        )
        self.conf.write_text(base + extra_config)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.host, self.port):
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""
            self.stop()
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"mosquitto did not start on port {self.port}: {err} {log}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
