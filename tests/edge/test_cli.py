"""`python -m edge run` as a real process: mock pins via GPIOZERO_PIN_FACTORY, a real clip, a real mosquitto, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.edge.server_side import ServerSide
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]

REPO = Path(__file__).resolve().parents[2]


class Output:
    """Collects a process's stderr lines on a thread so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip())
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def close(self, proc: subprocess.Popen[str]) -> None:
        self._thread.join(10)
        if proc.stderr is not None:
            proc.stderr.close()

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def test_run_stops_cleanly_on_sigterm_with_the_relay_off(mosquitto: Mosquitto, faces: Path, tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"station_id: st-cli\n"
        f"data_dir: {tmp_path / 'data'}\n"
        f"mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}}}\n"
        f"camera: {{source: '{faces / 'videos/face_recognition/short_hamilton_clip.mp4'}', realtime: true}}\n"
        f"detection: {{scale: 1.0}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYSTATION_EDGE_")} | {"GPIOZERO_PIN_FACTORY": "mock"}
    with ServerSide(mosquitto.host, mosquitto.port) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        out = Output(proc)
        try:
            assert out.wait_for("MQTT connected"), out.text
            assert server.wait(lambda: any(s.station_id == "st-cli" and s.online for s in server.statuses))
            # Hamilton's cast are strangers to this station: the door stays shut and a denial is logged.
            assert out.wait_for("denied unknown", timeout=60), out.text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, out.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            out.close(proc)
        assert out.wait_for("door closed: relay off", timeout=5), out.text
        assert "stopping (SIGTERM)" in out.text and "Traceback" not in out.text
        assert server.wait(lambda: any(e.station_id == "st-cli" and e.decision.value == "denied" for e in server.entries))
        assert server.wait(lambda: not [s for s in server.statuses if s.station_id == "st-cli"][-1].online)
