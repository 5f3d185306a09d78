"""The server's life cycle: start, stop without leftovers, clear start-up errors, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.broker import free_port
from server.errors import StartupError
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto

from .conftest import TOKEN, make_settings, start_server

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_stop_leaves_no_threads_and_frees_the_port(tmp_path: Path, mosquitto: Mosquitto) -> None:
    before = _threads()
    settings = make_settings(tmp_path, mosquitto)
    runtime = start_server(settings, mosquitto)
    assert httpx.get(runtime.url + "/api/health").json()["mqtt_connected"] is True
    runtime.stop()
    runtime.stop()  # idempotent
    deadline = time.monotonic() + 15  # idle threadpool workers wind down on their own
    while (_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (_threads() - before), [t.name for t in _threads() - before]
    with pytest.raises(httpx.ConnectError):
        httpx.get(runtime.url + "/api/health", timeout=2)
    # The same port can be served again at once.
    with ServerRuntime(settings) as again:
        assert httpx.get(again.url + "/api/health").status_code == 200


def test_taken_port_is_a_clear_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        before = _threads()
        runtime = ServerRuntime(make_settings(tmp_path, mosquitto, http_port=port))
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            runtime.start()
        assert not (_threads() - before)


def test_server_starts_without_a_broker_and_connects_later(tmp_path: Path, mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    settings = make_settings(tmp_path, mosquitto)
    with ServerRuntime(settings) as runtime:
        health = httpx.get(runtime.url + "/api/health").json()
        assert health == {"status": "ok", "database": "ok", "mqtt_connected": False}
        mosquitto.start()
        assert runtime.ingest is not None and runtime.ingest.wait_connected(30)


def test_cli_run_serves_until_sigterm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = free_port()
    config = tmp_path / "server.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nhttp_port: {port}\nmqtt_port: {mosquitto.port}\nmqtt_client_id: cli-test\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYSTATION_SERVER_")}
    env["WAYSTATION_SERVER_API_TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "run", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the server never answered"
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.get(url + "/api/stations", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"Waystation server at {url}" in out and "stopped" in out
    assert (tmp_path / "data" / "server.db").is_file()


def test_unreachable_database_is_retried_then_reported(tmp_path: Path, mosquitto: Mosquitto) -> None:
    url = f"postgresql+psycopg://waystation:hunter2-secret@127.0.0.1:{free_port()}/waystation"
    settings = make_settings(tmp_path, mosquitto, database_url=url, database_wait_s=1.0)
    assert "hunter2" not in repr(settings)
    before = _threads()
    started = time.monotonic()
    with pytest.raises(StartupError, match="cannot reach the database") as info:
        ServerRuntime(settings).start()
    assert 0.9 < time.monotonic() - started < 10  # retried for the configured while, then gave up
    assert "hunter2" not in str(info.value)
    assert not (_threads() - before)
