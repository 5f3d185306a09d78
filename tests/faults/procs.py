"""The server and a station as real processes, to be stopped, killed and restarted by the fault tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
import yaml

from core.broker import free_port
from server.db import make_engine
from server.tables import Entry
from tests.faults.edge_station import event_id

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fault-test-token-0123456789"


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ServerProcess:
    """``python -m server run`` with a YAML config; its log goes to a file the test can read."""

    def __init__(self, folder: Path, broker_port: int, *, database_url: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.config = folder / "server.yaml"
        self.log = folder / "server.log"
        values: dict[str, object] = {
            "data_dir": str(folder / "data"),
            "api_token": TOKEN,
            "http_port": self.port,
            "mqtt_port": broker_port,
            "mqtt_client_id": "fault-test-server",  # fixed: the broker keeps its session while it is down
        }
        if database_url:
            values["database_url"] = database_url
        self.config.write_text(yaml.safe_dump(values))
        self.database_url = database_url or f"sqlite:///{folder / 'data' / 'server.db'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "run", "--config", str(self.config)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=_env(),
        )
        log.close()
        wait_until(self._healthy, 60, "the server process to answer /api/health with MQTT connected")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/api/health", timeout=1, trust_env=False).json().get("mqtt_connected") is True
        except (httpx.HTTPError, ValueError):
            return False

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                            trust_env=False)

    def register(self, station: str) -> None:
        with self.api() as api:
            api.post("/api/stations", json={"station_id": station, "name": station}).raise_for_status()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, whatever was not committed is not acknowledged either."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def event_ids(self) -> list[str]:
        """Every stored event id (a list: a duplicate would show twice)."""
        engine = make_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.select(Entry.event_id)).scalars())
        finally:
            engine.dispose()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class EdgeProcess:
    """tests/faults/edge_station.py as a process; its stdout lines are collected as they come."""

    def __init__(self, data_dir: Path, broker_port: int, station: str) -> None:
        self.data_dir, self.broker_port, self.station = data_dir, broker_port, station
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.queued: list[int] = []
        self.seen: list[str] = []
        self._reader: threading.Thread | None = None
        self.stderr = data_dir.parent / f"{station}-edge.err"

    def start(self, *args: str) -> "EdgeProcess":
        err = open(self.stderr, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.edge_station", str(self.data_dir), str(self.broker_port),
             self.station, *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(),
        )
        err.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_line("started", 30)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("queued "):
                self.queued.append(int(line.split()[1]))
            self.seen.append(line)
            self.lines.put(line)

    def wait_line(self, text: str, timeout: float) -> None:
        wait_until(lambda: text in self.seen or self._died(), timeout, f"'{text}' from the edge process")
        assert text in self.seen, f"the edge process exited: {self.stderr.read_text()[-3000:]}"

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.kill()

    def ids(self, indices: range | list[int]) -> set[str]:
        return {str(event_id(self.station, i)) for i in indices}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
