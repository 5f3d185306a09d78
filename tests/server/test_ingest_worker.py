"""`python -m server ingest`: an ingest worker process beside the server (systemd: waystation-ingest@N).

Run as a real process against mosquitto and a real SQLite file: it stores what stations send, refuses
a configuration that would make it duplicate the server's work, refuses an unmigrated database, and
stops cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from models import topics
from models.messages import Decision, EntryEvent, encode
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.stations import register_station
from server.tables import Entry
from tests.support.services import Mosquitto

from .conftest import TOKEN, mqtt_link, publish_acked, wait_until

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, broker: Mosquitto, url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "WAYSTATION_SERVER_API_TOKEN": TOKEN,
        "WAYSTATION_SERVER_DATA_DIR": str(tmp_path / "data"),
        "WAYSTATION_SERVER_DATABASE_URL": url,
        "WAYSTATION_SERVER_MQTT_HOST": broker.host,
        "WAYSTATION_SERVER_MQTT_PORT": str(broker.port),
        "WAYSTATION_SERVER_MQTT_CLIENT_ID": f"ws-ingest-test-{uuid.uuid4().hex[:6]}",
        "WAYSTATION_SERVER_MQTT_PROTOCOL": "5",
        "WAYSTATION_SERVER_MQTT_SHARED_GROUP": "ingest",
        **extra,
    }
    return env


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", "ingest"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_worker_without_a_shared_group_is_a_config_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    env = _env(tmp_path, mosquitto, f"sqlite:///{tmp_path / 'server.db'}")
    del env["WAYSTATION_SERVER_MQTT_SHARED_GROUP"]
    done = _run(env)
    assert done.returncode == 2, done.stderr  # systemd's RestartPreventExitStatus: not retried
    assert "ConfigError: mqtt_shared_group" in done.stderr


def test_a_worker_refuses_a_database_that_was_not_migrated(tmp_path: Path, mosquitto: Mosquitto) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade_database(engine, "0005_entry_indexes")
    engine.dispose()
    done = _run(_env(tmp_path, mosquitto, url))
    assert done.returncode == 1, done.stderr
    assert "schema is at 0005_entry_indexes" in done.stderr and "python -m server migrate" in done.stderr


def test_a_worker_process_stores_entries_and_stops_on_sigterm(tmp_path: Path, mosquitto: Mosquitto) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    with make_sessionmaker(engine)() as session:
        register_station(session=session, station_id="st-worker", name="Worker test")
    proc = subprocess.Popen([sys.executable, "-m", "server", "ingest"], cwd=REPO, env=_env(tmp_path, mosquitto, url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        events = [EntryEvent(station_id="st-worker", decision=Decision.GRANTED, reason=f"{i}") for i in range(120)]

        def stored() -> int:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(Entry)).scalar_one()

        with mqtt_link(mosquitto) as link:
            # The worker subscribes some time after it starts: send until the first entry lands.
            probe = EntryEvent(station_id="st-worker", decision=Decision.DENIED, reason="probe")
            wait_until(lambda: proc.poll() is None and link.publish(topics.entry("st-worker"), encode(probe))
                       and stored() >= 1, 60, "the worker stores a first entry")
            publish_acked(link, [(topics.entry("st-worker"), encode(e)) for e in events])
            wait_until(lambda: stored() == 121, 30, "all entries stored by the worker")
        with engine.connect() as conn:
            reasons = set(conn.execute(sa.select(Entry.reason)).scalars())
        assert reasons == {e.reason for e in events} | {"probe"}  # each stored once, the probe once
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "in group ingest" in out and out.rstrip().endswith("stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        engine.dispose()
