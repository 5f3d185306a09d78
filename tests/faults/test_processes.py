"""Faults with real processes: Debian's mosquitto, ``python -m server run`` and a station process.

In every case: no entry lost, none stored twice, no process crashed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.services import Mosquitto, postgres_url  # noqa: F401  (postgres_url: a fixture)

from .procs import EdgeProcess, ServerProcess, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto) -> Iterator[ServerProcess]:
    """``python -m server run`` on a SQLite file, or on a fresh PostgreSQL database."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    proc = ServerProcess(tmp_path / "server", mosquitto.port, database_url=url).start()
    try:
        yield proc
    finally:
        proc.stop()


def _assert_exactly(server: ServerProcess, expected: set[str], timeout: float = 60) -> None:
    wait_until(lambda: len(set(server.event_ids())) >= len(expected), timeout, f"{len(expected)} stored entries")
    ids = server.event_ids()
    assert len(ids) == len(set(ids)), "an entry was stored twice"
    assert set(ids) == expected


def _assert_clean(server: ServerProcess) -> None:
    assert server.alive, server.log_text()[-3000:]
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_broker_restarted_during_a_burst(tmp_path: Path, mosquitto: Mosquitto, server: ServerProcess) -> None:
    server.register("burst")
    edge = EdgeProcess(tmp_path / "edge", mosquitto.port, "burst").start("--count", "1200", "--rate", "200")
    try:
        wait_until(lambda: len(edge.queued) >= 200, 30, "the burst to start")
        mosquitto.restart()  # SIGTERM: mosquitto saves its queues, stations and server reconnect
        wait_until(lambda: len(edge.queued) >= 600, 30, "more of the burst")
        mosquitto.restart()
        edge.wait_line("all queued", 60)
        edge.wait_line("drained", 90)
        _assert_exactly(server, edge.ids(range(1200)))
        _assert_clean(server)
    finally:
        edge.stop()


def test_server_down_for_a_while_and_back(tmp_path: Path, mosquitto: Mosquitto, server: ServerProcess) -> None:
    """The server's persistent session: entries published while it is down wait at the broker."""
    server.register("patient")
    edge = EdgeProcess(tmp_path / "edge", mosquitto.port, "patient").start("--count", "800", "--rate", "200")
    try:
        wait_until(lambda: len(edge.queued) >= 150, 30, "the first entries")
        server.kill()  # in the middle of storing: what it had not committed, it had not acknowledged
        edge.wait_line("all queued", 60)
        edge.wait_line("drained", 60)  # every entry is with the broker now
        assert len(set(server.event_ids())) < 800
        time.sleep(1.0)
        server.start()
        _assert_exactly(server, edge.ids(range(800)))
        _assert_clean(server)
    finally:
        edge.stop()


def test_station_killed_mid_publish_and_restarted(
    tmp_path: Path, mosquitto: Mosquitto, server: ServerProcess
) -> None:
    server.register("crashy")
    edge = EdgeProcess(tmp_path / "edge", mosquitto.port, "crashy").start("--count", "3000", "--rate", "0")
    wait_until(lambda: len(edge.queued) >= 300 and len(server.event_ids()) >= 100, 60, "publishing under way")
    # What the server holds just before the kill: read after it, the broker's
    # deliveries of events already in flight could let the server catch up.
    stored = set(server.event_ids())
    edge.kill()  # SIGKILL between two commits, with events in flight
    queued = list(edge.queued)
    assert 300 <= len(queued) < 3000 and queued == list(range(len(queued)))
    assert len(stored) < len(queued), "the kill came too late to test anything"

    again = EdgeProcess(tmp_path / "edge", mosquitto.port, "crashy").start("--drain-only", "--exit-when-drained")
    try:
        again.wait_line("drained", 60)
        # Every event whose enqueue returned arrives; at most the one being committed at the kill comes extra.
        wait_until(lambda: edge.ids(queued) <= set(server.event_ids()), 60, "the queued events")
        ids = server.event_ids()
        assert len(ids) == len(set(ids))
        assert set(ids) - edge.ids(queued) <= edge.ids([len(queued)])
        _assert_clean(server)
    finally:
        again.stop()


def test_duplicate_deliveries_are_stored_once(tmp_path: Path, mosquitto: Mosquitto, server: ServerProcess) -> None:
    """A station resends what it has no acknowledgement for; a restarted server gets redeliveries."""
    from core.mqtt import MqttLink, MqttSettings
    from models import topics
    from models.messages import Decision, EntryEvent, encode
    from tests.server.conftest import publish_acked

    server.register("dupes")
    events = [EntryEvent(station_id="dupes", decision=Decision.GRANTED, reason=f"dup {i}") for i in range(150)]
    wire = [(topics.entry("dupes"), encode(e)) for e in events]
    link = MqttLink(MqttSettings(port=mosquitto.port, client_id="dupes-publisher", clean_start=True))
    link.start()
    try:
        assert link.wait_connected(10)
        publish_acked(link, wire + wire[::-1] + wire[::3])  # each event at least twice, out of order
        _assert_exactly(server, {str(e.event_id) for e in events})
        server.kill()
        publish_acked(link, wire)  # the same again while the server is away, then after its restart
        server.start()
        publish_acked(link, wire[:50])
        time.sleep(2.0)
        _assert_exactly(server, {str(e.event_id) for e in events})
        _assert_clean(server)
    finally:
        link.stop()
