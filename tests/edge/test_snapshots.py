"""Snapshots of refused faces at the station: what is taken (a small JPEG of the face, never a frame, never for a
grant), how few (per hour, a share of the outbox), and that they wait in the durable outbox behind their entry,
are pushed out before any entry, and reach the server after a station was offline.

Real photos of LFW strangers (never enrolled), the real dlib models, a real SQLite outbox; the whole-agent tests
use gpiozero's MockFactory, Debian's mosquitto and the real server runtime.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from core.broker import free_port
from core.imaging import camera_frame, load_image
from demo.scenario import EX, Visit
from edge.agent import EdgeAgent
from edge.camera import Frame
from edge.config import EdgeSettings
from edge.snapshots import SnapshotConfig, SnapshotTaker
from edge.store import EdgeStore, OutboxFull
from models import topics
from models.messages import Decision, EntryEvent, decode
from models.snapshot import EntrySnapshot, decode_snapshot
from server.db import make_sessionmaker
from server.snapshots import snapshot_of
from server.stations import register_station
from server.tables import Entry, EntrySnapshot as SnapshotRow
from tests.server.conftest import make_settings, start_server, wait_until
from tests.support.services import Mosquitto

STATION = "snap-door"
STRANGERS = ("Adam_Freier", "Brett_Hawke", "Chang_Saio-yue")


def stranger_path(name: str) -> str:
    return f"lfw_dev_strangers/{name}/{name}_0001.jpg"


@pytest.fixture(scope="module")
def stranger_frame(faces: Path) -> np.ndarray:
    """A 640x480 camera frame of a never-enrolled person, as the door camera shows them."""
    return camera_frame(load_image(faces / stranger_path(STRANGERS[0])))


def denied(reason: str = "unknown face") -> EntryEvent:
    return EntryEvent(station_id=STATION, decision=Decision.DENIED, reason=reason)


def face_box(face_engine, rgb: np.ndarray):  # noqa: ANN001, ANN201
    boxes = face_engine.detect(rgb, upsample=1)
    assert boxes, "no face in the picture"
    return max(boxes, key=lambda b: b.size)


def queued(store: EdgeStore) -> list[tuple[str, bytes]]:
    return [(topic, payload) for _id, topic, payload in store.pending(1000)]


# -- the taker on real frames ------------------------------------------------------------------------------------
@pytest.mark.faces
@pytest.mark.models
def test_a_refused_stranger_gets_a_small_jpeg_of_the_face_and_a_grant_gets_none(
    tmp_path: Path, face_engine, stranger_frame: np.ndarray  # noqa: ANN001
) -> None:
    store = EdgeStore.open(tmp_path)
    config = SnapshotConfig(enabled=True, max_px=160, max_bytes=8 * 1024)
    taker = SnapshotTaker(config, STATION, store)
    box = face_box(face_engine, stranger_frame)

    taker.see(stranger_frame, box, t=10.0)
    granted = EntryEvent(station_id=STATION, decision=Decision.GRANTED, worker_id="w1")
    store.enqueue(granted)
    assert taker.after_entry(granted, at=10.1) is False
    event = denied()
    store.enqueue(event)
    taker.see(stranger_frame, box, t=10.2)
    assert taker.after_entry(event, at=10.3) is True

    # Behind its entry in the outbox, on the snapshot topic, carrying a JPEG under the cap.
    rows = queued(store)
    assert [t for t, _ in rows] == [topics.entry(STATION), topics.entry(STATION), topics.snapshot(STATION)]
    snapshot = decode_snapshot(rows[-1][1], topic=rows[-1][0])
    assert snapshot.event_id == event.event_id and snapshot.station_id == STATION
    jpeg = snapshot.jpeg
    assert jpeg[:3] == b"\xff\xd8\xff" and len(jpeg) <= config.max_bytes
    picture = load_image(jpeg)
    assert max(picture.shape[:2]) <= 160, "a face crop, downscaled: never the 640x480 frame"
    assert face_engine.detect(picture, upsample=1), "the stranger's face is in the snapshot"
    store.close()


@pytest.mark.faces
@pytest.mark.models
def test_per_hour_limit_no_face_and_decisions_not_chosen(
    tmp_path: Path, face_engine, stranger_frame: np.ndarray  # noqa: ANN001
) -> None:
    now = [1000.0]
    store = EdgeStore.open(tmp_path)
    taker = SnapshotTaker(SnapshotConfig(enabled=True, per_hour=2, decisions=("denied",)), STATION, store,
                          clock=lambda: now[0])
    box = face_box(face_engine, stranger_frame)

    def attempt(decision: Decision = Decision.DENIED, *, face: bool = True, at: float | None = None) -> bool:
        event = EntryEvent(station_id=STATION, decision=decision)
        store.enqueue(event)
        if face:
            taker.see(stranger_frame, box, t=now[0])
        return taker.after_entry(event, at=now[0] if at is None else at)

    assert attempt(Decision.SPOOF) is False  # this station sends pictures of "denied" only
    assert attempt(face=False) is False and taker.counts["no_face"] == 1  # no face seen since the last picture
    assert attempt(at=now[0] + 5.0) is False  # the face was seen 5 s before the decision: not this person
    assert [attempt(), attempt(), attempt()] == [True, True, False]  # 2 an hour; someone loitering gets no more
    now[0] += 1800.0
    assert attempt() is False  # still within the hour of the first two
    now[0] += 1800.0
    assert attempt() is True  # the first one is an hour old: room for one more
    assert taker.counts["rate_limited"] == 2 and taker.counts["queued"] == 3
    assert sum(t.endswith("/snapshot") for t, _ in queued(store)) == 3
    store.close()


# -- the outbox ---------------------------------------------------------------------------------------------------
def small_snapshot(event: EntryEvent, size: int = 4000) -> EntrySnapshot:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * (size // 256) + b"\xff\xd9"
    return EntrySnapshot.of_jpeg(jpeg, event_id=event.event_id, station_id=event.station_id)


def test_snapshots_never_push_out_entries_and_are_dropped_first(tmp_path: Path) -> None:
    store = EdgeStore.open(tmp_path)
    store.outbox_limit_bytes = 40_000
    events = [denied() for _ in range(5)]
    for event in events:
        store.enqueue(event)
        store.enqueue_snapshot(small_snapshot(event), max_bytes=30_000)
        store.enqueue_snapshot(small_snapshot(event), max_bytes=30_000)  # again: one copy
    # 5 snapshots of ~5.4 KiB in base64 fit their 30,000-byte share; a sixth does not.
    assert sum(t.endswith("/snapshot") for t, _ in queued(store)) == 5
    with pytest.raises(OutboxFull):
        store.enqueue_snapshot(small_snapshot(denied()), max_bytes=30_000)
    used = store.outbox_bytes
    with pytest.raises(OutboxFull):  # and never past the outbox's own budget
        store.enqueue_snapshot(small_snapshot(denied(), size=40_000 - used))

    # Entries until the budget is reached: the oldest snapshots make room, no entry is refused.
    more = []
    while sum(t.endswith("/snapshot") for t, _ in queued(store)) > 0:
        more.append(denied(reason="x" * 190))
        store.enqueue(more[-1])
    assert [decode(p, EntryEvent).event_id for t, p in queued(store) if t.endswith("/entry")] == [
        e.event_id for e in events + more
    ]
    assert store.outbox_bytes <= store.outbox_limit_bytes
    while True:  # with no snapshot left, an entry that does not fit is refused as before
        try:
            store.enqueue(denied(reason="x" * 190))
        except OutboxFull:
            break
    store.close()
    reopened = EdgeStore.open(tmp_path)
    assert reopened.outbox_bytes == used_after(reopened)  # the running count matches what is on disk
    reopened.close()


def used_after(store: EdgeStore) -> int:
    return sum(len(t) + len(p) + 100 for _id, t, p in store.pending(100_000))


# -- the whole station ----------------------------------------------------------------------------------------
def station_settings(tmp_path: Path, port: int, **snapshots: object) -> EdgeSettings:
    return EdgeSettings.build(
        station_id=STATION,
        data_dir=tmp_path / "edge",
        mqtt={"host": "127.0.0.1", "port": port},
        policy={"visit_gap_s": 0.8, "unknown_log_interval_s": 0.0},
        liveness={"mode": "off"},  # still photos; liveness has its own tests
        snapshots=snapshots,
    )


def visit_frames(faces: Path, visits: tuple[Visit, ...]) -> Iterator[Frame]:
    """Each person for 8 frames, then an empty doorway for 1.2 s, frames 0.2 s apart by their own clock.

    Every frame is processed in order whatever the machine's load (not a paced camera that skips frames),
    so each visit is decided the same way every time."""
    empty = np.full((480, 640, 3), 96, np.uint8)
    base, i = time.monotonic(), 0
    for visit in visits:
        person = camera_frame(load_image(faces / visit.photo))
        for rgb in [person] * 8 + [empty] * 6:
            yield Frame(i, base + i * 0.2, rgb)
            i += 1


def play(settings: EdgeSettings, visits: tuple[Visit, ...], faces: Path, face_engine) -> EdgeAgent:  # noqa: ANN001
    verdicts: list = []
    agent = EdgeAgent(settings, frames=visit_frames(faces, visits), pin_factory=MockFactory(), engine=face_engine,
                      on_verdict=lambda v, _ms: verdicts.append(v))
    agent.start()
    try:
        agent.run()
    finally:
        agent.stop()
    agent.verdicts = verdicts  # type: ignore[attr-defined]
    return agent


@pytest.mark.faces
@pytest.mark.models
@pytest.mark.broker
def test_snapshots_off_by_default_a_stranger_is_logged_without_a_picture(
    tmp_path: Path, faces: Path, face_engine, mosquitto: Mosquitto  # noqa: ANN001
) -> None:
    assert EdgeSettings.build(station_id=STATION).snapshots.enabled is False
    server = start_server(make_settings(tmp_path, mosquitto), mosquitto)
    try:
        with make_sessionmaker(server.engine)() as session:
            register_station(session=session, station_id=STATION, name="Snapshot door")
        visit = Visit("stranger", stranger_path(STRANGERS[0]), None)
        agent = play(station_settings(tmp_path, mosquitto.port), (visit,), faces, face_engine)
        assert [v.decision for v in agent.verdicts] == [Decision.DENIED]
        wait_until(lambda: server.ingest.counters["stored"] == 1, 20, "the stranger's entry")
        time.sleep(1.0)  # a snapshot, had one been sent, would have come right behind it
        with make_sessionmaker(server.engine)() as session:
            assert session.query(Entry).one().decision == "denied"
            assert session.query(SnapshotRow).count() == 0
        assert server.ingest.counters["snapshots"] == 0
    finally:
        server.stop()


@pytest.mark.faces
@pytest.mark.models
@pytest.mark.broker
def test_a_station_offline_queues_snapshots_and_delivers_them_later(
    tmp_path: Path, faces: Path, face_engine, mosquitto: Mosquitto  # noqa: ANN001
) -> None:
    """Obama enrolled; obama and three strangers visit while the station cannot reach the broker; per_hour 2.
    Later, online: two denied entries have a snapshot each (a JPEG under max_bytes with the face), the third
    stranger's has none, and the grant none."""
    from tests.edge.server_side import upsert

    settings = station_settings(tmp_path, free_port(), enabled=True, per_hour=2, max_bytes=12 * 1024)
    store = EdgeStore.open(settings.data_dir)
    obama = face_engine.encode_single(load_image(faces / EX / "obama/obama.jpg"))[0]
    store.apply_changes([upsert(1, "obama", obama)], snapshot=False, latest_version=1)
    store.close()
    visits = (Visit("obama", f"{EX}/obama/obama2.jpg", "obama"),
              *(Visit(name, stranger_path(name), None) for name in STRANGERS))
    agent = play(settings, visits, faces, face_engine)
    assert [v.decision for v in agent.verdicts] == [Decision.GRANTED] + [Decision.DENIED] * 3
    assert agent.snapshots is not None and agent.snapshots.counts["rate_limited"] == 1

    server = start_server(make_settings(tmp_path, mosquitto), mosquitto)
    try:
        with make_sessionmaker(server.engine)() as session:
            register_station(session=session, station_id=STATION, name="Snapshot door")
        online = station_settings(tmp_path, mosquitto.port, enabled=True)
        with EdgeAgent(online, frames=[], pin_factory=MockFactory(), engine=face_engine) as station:
            wait_until(lambda: station.outbox_depth == 0, 30, "the outbox delivered")
        wait_until(lambda: server.ingest.counters["snapshots"] == 2, 20, "two snapshots stored")
        with make_sessionmaker(server.engine)() as session:
            entries = {e.event_id: e for e in session.query(Entry)}
            rows = session.query(SnapshotRow).all()
            assert sorted(e.decision for e in entries.values()) == ["denied", "denied", "denied", "granted"]
            assert {entries[r.event_id].decision for r in rows} == {"denied"}
            for row in rows:
                assert row.station_id == STATION and len(row.jpeg) <= 12 * 1024
                picture = load_image(snapshot_of(session, row.event_id).jpeg)
                assert max(picture.shape[:2]) <= 160 and face_engine.detect(picture, upsample=1)
        assert server.ingest.counters["rejected_snapshot"] == 0
    finally:
        server.stop()


def test_snapshot_rows_are_keyed_apart_from_their_entry(tmp_path: Path) -> None:
    store = EdgeStore.open(tmp_path)
    event = denied()
    store.enqueue(event)
    store.enqueue_snapshot(small_snapshot(event))
    ids = [i for i, _t, _p in store.pending()]
    assert ids[0] == str(event.event_id) and ids[1] != ids[0] and uuid.UUID(ids[1])
    assert store.mark_delivered(*ids) == 2 and store.outbox_bytes == 0
    store.close()
