"""Malformed, oversized and hostile payloads on every topic the server and a station subscribe to.

Property-based (hypothesis) over a real mosquitto: every payload has exactly
one outcome, a refused one is counted and logged on one line, no handler
fails, and the receivers keep working (a valid message after the hostile ones
is still handled).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.mqtt import MqttLink, MqttSettings
from edge.config import EdgeSettings
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models import topics
from models.encoding import FaceEncoding
from models.errors import ContractError
from models.messages import (
    MAX_PAYLOAD_BYTES,
    Decision,
    EntryEvent,
    GalleryChange,
    GalleryChangeMessage,
    GalleryOp,
    StationStatus,
    SyncAck,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)
from server.config import ServerSettings
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.ingest import COUNTER_NAMES, Ingest
from server.stations import register_station
from tests.support.services import Mosquitto

from .procs import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

STATION = "fz-1"
OUTCOMES = [n for n in COUNTER_NAMES if n not in ("sync_pages", "db_errors", "errors")]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path_factory.mktemp("hostile-broker")).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def publisher(broker: Mosquitto) -> Iterator[MqttLink]:
    link = MqttLink(MqttSettings(port=broker.port, client_id="hostile-publisher", clean_start=True))
    link.start()
    assert link.wait_connected(10)
    yield link
    link.stop()


@pytest.fixture(scope="module")
def ingest(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ingest, Records]]:
    folder = tmp_path_factory.mktemp("hostile-server")
    url = f"sqlite:///{folder / 'server.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    with make_sessionmaker(engine)() as session:
        register_station(session=session, station_id=STATION, name="Fuzzed")
    settings = ServerSettings(api_token="x" * 20, database_url=url, mqtt_port=broker.port,
                              mqtt_client_id="hostile-server")
    ing = Ingest(settings, engine)
    records = Records()
    logging.getLogger("server.ingest").addHandler(records)
    ing.start()
    assert ing.wait_connected(10)
    time.sleep(0.3)  # SUBACK
    yield ing, records
    ing.stop()
    logging.getLogger("server.ingest").removeHandler(records)
    engine.dispose()


# -- payloads -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def _valid_messages() -> dict[str, dict]:
    change = GalleryChange(version=1, op=GalleryOp.UPSERT, worker_id="w1",
                           encodings=(FaceEncoding.from_vector(np.full(128, 0.01, np.float32)),))
    return {
        "entry": json.loads(encode(EntryEvent(station_id=STATION, decision=Decision.GRANTED, worker_id="w1"))),
        "status": json.loads(encode(StationStatus(station_id=STATION, online=True, uptime_s=1.0))),
        "request": json.loads(encode(SyncRequest(station_id=STATION, since_version=0))),
        "ack": json.loads(encode(SyncAck(station_id=STATION, version=1))),
        "change": json.loads(encode(GalleryChangeMessage(change=change))),
        "reply": json.loads(encode(SyncReply(request_id=uuid.uuid4(), changes=(change,), latest_version=1))),
    }


VALID = _valid_messages()


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    """A valid message of ``kind`` with one field replaced, removed or added."""
    message = dict(VALID[kind])
    key = draw(st.sampled_from(sorted(message)) | st.text(max_size=10))
    action = draw(st.sampled_from(["replace", "remove", "nest"]))
    if action == "remove":
        message.pop(key, None)
    elif action == "nest" and isinstance(message.get(key), dict):
        inner = dict(message[key])
        inner[draw(st.sampled_from(sorted(inner)) if inner else st.text(max_size=5))] = draw(json_values)
        message[key] = inner
    else:
        message[key] = draw(json_values)
    return json.dumps(message, allow_nan=True).encode()


def hostile(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        mutated(kind),
        st.integers(1, 50).map(lambda n: b"[" * (n * 2000) + b"]" * (n * 2000)),  # nesting bombs
        st.integers(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 4096).map(lambda n: b'{"x":"' + b"a" * n + b'"}'),
    )


SERVER_TOPICS = {
    "entry": topics.entry(STATION),
    "status": topics.status(STATION),
    "request": topics.sync_request(STATION),
    "ack": topics.sync_ack(STATION),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_server_counts_and_logs_every_payload_and_keeps_working(
    data: st.DataObject, ingest: tuple[Ingest, Records], publisher: MqttLink
) -> None:
    ing, records = ingest
    kind = data.draw(st.sampled_from(sorted(SERVER_TOPICS)))
    payload = data.draw(hostile(kind))
    before = ing.counters
    logged = len(records.messages)
    assert publisher.publish(SERVER_TOPICS[kind], payload)
    wait_until(lambda: sum(ing.counters[n] for n in OUTCOMES) > sum(before[n] for n in OUTCOMES), 20, "an outcome")
    after = ing.counters
    changed = {n: after[n] - before[n] for n in OUTCOMES if after[n] != before[n]}
    assert sum(changed.values()) == 1, changed  # exactly one outcome
    assert after["errors"] == 0
    (outcome,) = changed
    if outcome.startswith("rejected_"):
        new = records.messages[logged:]
        refusals = [m for m in new if m.startswith("refused message")]
        assert len(refusals) == 1 and "\n" not in refusals[0] and len(refusals[0]) < 700


@pytest.fixture(scope="module")
def station(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StationSync, Records]]:
    folder = tmp_path_factory.mktemp("hostile-edge")
    s = EdgeSettings.build(station_id=STATION, data_dir=folder, mqtt={"host": broker.host, "port": broker.port})
    store = EdgeStore.open(s.data_dir)
    sync = StationSync(s, store, build_link(s))
    records = Records()
    logging.getLogger("edge.sync").addHandler(records)
    sync.start()
    assert sync.link.wait_connected(10)
    time.sleep(0.3)
    yield sync, records
    sync.stop()
    store.close()
    logging.getLogger("edge.sync").removeHandler(records)


_sentinel_lock = threading.Lock()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_station_counts_every_bad_payload_and_keeps_working(
    data: st.DataObject, station: tuple[StationSync, Records], publisher: MqttLink
) -> None:
    sync, records = station
    kind = data.draw(st.sampled_from(["change", "reply"]))
    payload = data.draw(hostile(kind))
    cls = GalleryChangeMessage if kind == "change" else SyncReply
    try:
        decode(payload, cls)
        assume(False)  # a valid message is not hostile; the sync tests cover those
    except ContractError:
        pass
    topic = topics.GALLERY_CHANGE if kind == "change" else topics.sync_reply(STATION)
    with _sentinel_lock:
        bad_before = sync.stats.bad_payloads
        logged = len(records.messages)
        held = sync.store.gallery_version()
        assert publisher.publish(topic, payload)
        # A valid change after it, on the same connection: once applied, the hostile one was handled.
        sentinel = GalleryChange(version=held + 1, op=GalleryOp.UPSERT, worker_id=f"s{held + 1}",
                                 encodings=(FaceEncoding.from_vector(np.full(128, 0.02, np.float32)),))
        assert publisher.publish(topics.GALLERY_CHANGE, encode(GalleryChangeMessage(change=sentinel)))
        assert sync.holder.wait_for(lambda g: g.version == held + 1 and sentinel.worker_id in g.identities, 20)
        assert sync.stats.bad_payloads == bad_before + 1
        ignored = [m for m in records.messages[logged:] if m.startswith("sync: ignored a bad")]
        assert len(ignored) == 1 and "\n" not in ignored[0] and "\r" not in ignored[0]


def test_the_receivers_survived(
    ingest: tuple[Ingest, Records], station: tuple[StationSync, Records], publisher: MqttLink
) -> None:
    """After all of the above, a normal entry is still stored and the station still connected."""
    ing, _records = ingest
    sync, _station_records = station
    before = ing.counters["stored"]
    assert publisher.publish(topics.entry(STATION), encode(EntryEvent(station_id=STATION, decision=Decision.DENIED)))
    wait_until(lambda: ing.counters["stored"] == before + 1, 10, "a normal entry")
    assert ing.counters["errors"] == 0 and ing.link.handler_errors == 0
    assert sync.link.connected and sync.link.handler_errors == 0
