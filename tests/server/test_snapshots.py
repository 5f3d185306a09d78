"""Snapshots on the server: the contract refuses hostile payloads, the real ingest (mosquitto, SQLite) stores a
refused attempt's picture next to its entry once, refuses and counts everything else without stopping, and the
retention job deletes the rows it stored."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from core.imaging import encode_jpeg, fit_within, load_image
from models import topics
from models.errors import MalformedPayload, PayloadTooLarge, TopicMismatch
from models.messages import Decision, EntryEvent, encode
from models.snapshot import MAX_SNAPSHOT_BYTES, EntrySnapshot, decode_snapshot, encode_snapshot
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.ingest_store import store_events
from server.retention import RetentionSettings, run_retention
from server.runtime import ServerRuntime
from server.snapshots import SnapshotRefused, check_image, forget_worker, store_snapshot
from server.tables import AuditEvent, EntrySnapshot as SnapshotRow
from tests.server.conftest import STATION, mqtt_link, publish_acked, wait_until
from tests.support.services import Mosquitto

STRANGER = "lfw_dev_strangers/Brett_Hawke/Brett_Hawke_0001.jpg"


@pytest.fixture(scope="module")
def face_jpeg_bytes(faces: Path) -> bytes:
    """A stranger's photo as a 160-pixel JPEG (a snapshot's size)."""
    return encode_jpeg(fit_within(load_image(faces / STRANGER), 160)[0], 80)


def snapshot_payload(jpeg: bytes, event_id: uuid.UUID, station: str = STATION) -> bytes:
    return encode_snapshot(EntrySnapshot.of_jpeg(jpeg, event_id=event_id, station_id=station))


def raw_payload(event_id: uuid.UUID, station: str, data: str) -> bytes:
    """A snapshot as a hostile or broken station might write it, past the model's checks."""
    return json.dumps({"schema": "snapshot/1", "event_id": str(event_id), "station_id": station,
                       "taken_at": "2026-01-01T00:00:00+00:00", "content_type": "image/jpeg", "data": data}).encode()


# -- the contract -------------------------------------------------------------------------------------------------
def test_the_contract_refuses_hostile_snapshots(face_jpeg_bytes: bytes) -> None:
    event_id = uuid.uuid4()
    good = snapshot_payload(face_jpeg_bytes, event_id)
    topic = topics.snapshot(STATION)
    assert decode_snapshot(good, topic=topic).jpeg == face_jpeg_bytes
    b64 = base64.b64encode(face_jpeg_bytes).decode()
    over_the_cap = base64.b64encode(b"\xff\xd8\xff" + bytes(MAX_SNAPSHOT_BYTES) + b"\xff\xd9").decode()
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()
    cases = {
        "too big": (PayloadTooLarge, raw_payload(event_id, STATION, "A" * 200_000)),
        "image over the cap": ((PayloadTooLarge, MalformedPayload), raw_payload(event_id, STATION, over_the_cap)),
        "bad base64": (MalformedPayload, raw_payload(event_id, STATION, b64[:-8] + "!!!!====")),
        "base64 with junk inside": (MalformedPayload, raw_payload(event_id, STATION, b64[:100] + "\n" + b64[100:])),
        "a PNG": (MalformedPayload, raw_payload(event_id, STATION, png)),
        "not JSON": (MalformedPayload, b"\xff\xd8\xff not json"),
        "an extra field": (MalformedPayload, good[:-1] + b', "worker_id": "w1"}'),
        "another content type": (MalformedPayload, good.replace(b"image/jpeg", b"image/png")),
    }
    for what, (error, payload) in cases.items():
        try:
            decode_snapshot(payload, topic=topic)
        except error:
            continue
        pytest.fail(f"{what}: accepted")
    with pytest.raises(TopicMismatch):  # the body names another station than the topic
        decode_snapshot(snapshot_payload(face_jpeg_bytes, event_id, "s2"), topic=topic)
    with pytest.raises(TopicMismatch):  # a snapshot on the entry topic
        decode_snapshot(good, topic=topics.entry(STATION))
    with pytest.raises(PayloadTooLarge):
        EntrySnapshot.of_jpeg(b"\xff\xd8\xff" + bytes(MAX_SNAPSHOT_BYTES), event_id=event_id, station_id=STATION)


# -- the real ingest ------------------------------------------------------------------------------------------------
def test_ingest_stores_a_refused_attempts_snapshot_once_and_refuses_the_rest(
    server: ServerRuntime, station: str, mosquitto: Mosquitto, face_jpeg_bytes: bytes
) -> None:
    ingest = server.ingest
    assert ingest is not None and server.engine is not None
    sessions = make_sessionmaker(server.engine)
    with sessions() as session:
        from server.stations import register_station

        register_station(session=session, station_id="s2", name="Other stop")
    stranger = EntryEvent(station_id=STATION, decision=Decision.DENIED, reason="unknown face")
    spoof = EntryEvent(station_id=STATION, decision=Decision.SPOOF, reason="liveness failed")
    granted = EntryEvent(station_id=STATION, decision=Decision.GRANTED, worker_id="w1")
    elsewhere = EntryEvent(station_id="s2", decision=Decision.DENIED)
    big = encode_jpeg(np.full((600, 600, 3), 128, np.uint8), 50)  # a whole frame, not a face crop
    with mqtt_link(mosquitto) as link:
        # The entries first, as a station sends them; then their snapshots (one twice: a redelivery).
        publish_acked(link, [(topics.entry(e.station_id), encode(e)) for e in (stranger, spoof, granted, elsewhere)])
        wait_until(lambda: ingest.counters["stored"] == 4, 20, "four entries")
        b64 = base64.b64encode(face_jpeg_bytes).decode()
        topic = topics.snapshot(STATION)
        publish_acked(link, [
            (topic, snapshot_payload(face_jpeg_bytes, stranger.event_id)),
            (topic, snapshot_payload(face_jpeg_bytes, stranger.event_id)),
            (topic, snapshot_payload(face_jpeg_bytes, granted.event_id)),  # never for a grant
            (topic, snapshot_payload(face_jpeg_bytes, uuid.uuid4())),  # no such entry
            (topic, snapshot_payload(face_jpeg_bytes, elsewhere.event_id)),  # another station's entry
            (topic, snapshot_payload(b"\xff\xd8\xff\xe0" + bytes(500) + b"\xff\xd9", spoof.event_id)),  # not an image
            (topic, snapshot_payload(big, spoof.event_id)),  # too many pixels
            (topic, raw_payload(spoof.event_id, STATION, "A" * 100_000)),
            (topic, raw_payload(spoof.event_id, STATION, b64[:-8] + "!!!!====")),
            (topic, snapshot_payload(face_jpeg_bytes, spoof.event_id, "s2")),  # the body names another station
            (topics.snapshot("s2"), snapshot_payload(face_jpeg_bytes, spoof.event_id)),  # and the other way
            (topics.snapshot("nobody"), snapshot_payload(face_jpeg_bytes, uuid.uuid4(), "nobody")),
            (topic, b"\x00\x01 not json"),
            # After all that, the spoof's real snapshot is still taken.
            (topic, snapshot_payload(face_jpeg_bytes, spoof.event_id)),
        ])
        wait_until(lambda: ingest.counters["snapshots"] == 2, 20, "two snapshots stored")
        wait_until(lambda: ingest.counters["rejected_snapshot"] == 5, 10, "five snapshots refused by the server")
    counters = ingest.counters
    assert counters["rejected_too_large"] == 1
    assert counters["rejected_malformed"] == 2
    assert counters["rejected_topic_mismatch"] == 2
    assert counters["rejected_unknown_station"] >= 1  # the probe of wait_subscribed counts here too
    assert counters["duplicates"] == 1 and counters["errors"] == 0
    with sessions() as session:
        rows = {r.event_id: r for r in session.scalars(select(SnapshotRow))}
    assert set(rows) == {str(stranger.event_id), str(spoof.event_id)}
    assert rows[str(stranger.event_id)].jpeg == face_jpeg_bytes and rows[str(stranger.event_id)].station_id == STATION


# -- storage and retention without a broker ------------------------------------------------------------------------
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_retention_deletes_the_snapshots_ingest_stored(tmp_path: Path, face_jpeg_bytes: bytes) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade_database(engine)
    sessions = make_sessionmaker(engine)
    events = {age: EntryEvent(station_id=STATION, decision=Decision.DENIED, occurred_at=NOW - timedelta(days=age))
              for age in (2, 40, 400)}
    with sessions() as session:
        for age, event in events.items():
            at = NOW - timedelta(days=age)
            store_events(session=session, events=[event], received_at=at)
            snapshot = EntrySnapshot.of_jpeg(face_jpeg_bytes, event_id=event.event_id, station_id=STATION)
            assert store_snapshot(session=session, snapshot=snapshot, jpeg=check_image(snapshot), received_at=at)
            assert not store_snapshot(session=session, snapshot=snapshot, jpeg=face_jpeg_bytes)  # idempotent
    # Snapshots after 30 days; entries (and with them their snapshots) after 365 days.
    report = run_retention(RetentionSettings(retention_snapshots_days=30, retention_entries_days=365,
                                             retention_mode="purge"), sessions, now=NOW)
    assert report is not None and report.snapshots_purged == 1 and report.entries_purged == 1
    with sessions() as session:
        assert set(session.scalars(select(SnapshotRow.event_id))) == {str(events[2].event_id)}
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "retention.run")).one()
        assert audited.detail["snapshots_purged"] == 1
    # A granted entry never takes one, even handed straight to the store.
    granted = EntryEvent(station_id=STATION, decision=Decision.GRANTED, worker_id="w1")
    with sessions() as session:
        store_events(session=session, events=[granted])
        with pytest.raises(SnapshotRefused):
            store_snapshot(session=session, snapshot=EntrySnapshot.of_jpeg(
                face_jpeg_bytes, event_id=granted.event_id, station_id=STATION), jpeg=face_jpeg_bytes)
    engine.dispose()


def test_forget_worker_deletes_the_pictures_that_may_show_that_worker(tmp_path: Path, face_jpeg_bytes: bytes) -> None:
    """A spoof names the worker whose face matched: that picture goes with the worker; a stranger's stays."""
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade_database(engine)
    sessions = make_sessionmaker(engine)
    spoof = EntryEvent(station_id=STATION, decision=Decision.SPOOF, worker_id="w1", reason="liveness failed")
    stranger = EntryEvent(station_id=STATION, decision=Decision.DENIED, reason="unknown face")
    with sessions() as session:
        store_events(session=session, events=[spoof, stranger])
        for event in (spoof, stranger):
            snap = EntrySnapshot.of_jpeg(face_jpeg_bytes, event_id=event.event_id, station_id=STATION)
            store_snapshot(session=session, snapshot=snap, jpeg=check_image(snap))
        assert forget_worker(session, "w2") == 0
        assert forget_worker(session, "w1") == 1
        session.commit()
        assert set(session.scalars(select(SnapshotRow.event_id))) == {str(stranger.event_id)}
    engine.dispose()


def test_deleting_a_worker_deletes_the_snapshots_that_name_them(tmp_path: Path, face_jpeg_bytes: bytes) -> None:
    """'Delete a worker's face data everywhere' includes the picture of their photo held up at a station."""
    from models.encoding import FACE_MODEL_ID
    from server.gallery import delete_worker, enroll_worker

    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade_database(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        worker, _change = enroll_worker(session=session, name="Li Wei", vectors=[np.full(128, 0.05, np.float32)],
                                       model_id=FACE_MODEL_ID)
        spoof = EntryEvent(station_id=STATION, decision=Decision.SPOOF, worker_id=worker.worker_id, reason="liveness")
        stranger = EntryEvent(station_id=STATION, decision=Decision.DENIED, reason="unknown face")
        store_events(session=session, events=[spoof, stranger])
        for event in (spoof, stranger):
            snap = EntrySnapshot.of_jpeg(face_jpeg_bytes, event_id=event.event_id, station_id=STATION)
            store_snapshot(session=session, snapshot=snap, jpeg=check_image(snap))
        session.commit()
        delete_worker(session=session, worker_id=worker.worker_id)
        assert set(session.scalars(select(SnapshotRow.event_id))) == {str(stranger.event_id)}
    engine.dispose()
