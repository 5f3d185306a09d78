"""The edge's SQLite file: enrollment cache applied idempotently and atomically, and a durable outbox."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.errors import StoreError
from edge.store import EdgeStore
from models import topics
from models.encoding import FACE_MODEL_ID, FaceEncoding
from models.messages import Decision, EntryEvent, GalleryChange, GalleryOp, decode

RNG = np.random.default_rng(7)


def vec() -> np.ndarray:
    v = RNG.normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v) * 0.6


def upsert(version: int, worker: str, *vectors: np.ndarray, name: str = "", active: bool = True, model: str = FACE_MODEL_ID) -> GalleryChange:
    encs = tuple(FaceEncoding.from_vector(v, model=model) for v in (vectors or (vec(),)))
    return GalleryChange(version=version, op=GalleryOp.UPSERT, worker_id=worker, display_name=name or worker.title(),
                         encodings=encs, active=active)


def delete(version: int, worker: str) -> GalleryChange:
    return GalleryChange(version=version, op=GalleryOp.DELETE, worker_id=worker)


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    s = EdgeStore.open(tmp_path / "edge")
    yield s
    s.close()


def test_file_is_wal_with_full_sync(store: EdgeStore) -> None:
    assert store.path.name == "edge.db" and store.path.exists()
    con = sqlite3.connect(store.path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
    with store._engine.connect() as conn:  # the pragma is per connection: check the store's own
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_apply_then_load_gallery_matches_the_vectors(store: EdgeStore) -> None:
    a, b1, b2 = vec(), vec(), vec()
    version = store.apply_changes([upsert(1, "alice", a, name="Alice A."), upsert(2, "bob", b1, b2)], snapshot=False, latest_version=2)
    assert version == 2 and store.gallery_version() == 2
    gallery = store.load_gallery()
    assert gallery.version == 2 and sorted(gallery.identities) == ["alice", "bob"] and len(gallery) == 3
    m = gallery.match(b2)
    assert m.identity == "bob" and m.distance == pytest.approx(0.0, abs=1e-5)
    assert store.display_names() == {"alice": "Alice A.", "bob": "Bob"}


def test_applying_the_same_changes_twice_changes_nothing(store: EdgeStore) -> None:
    changes = [upsert(1, "alice"), upsert(2, "bob"), delete(3, "alice")]
    store.apply_changes(changes, snapshot=False, latest_version=3)
    first = (store.load_gallery().identities, store.worker("alice"), store.worker("bob"))
    store.apply_changes(changes, snapshot=False, latest_version=3)
    assert (store.load_gallery().identities, store.worker("alice"), store.worker("bob")) == first
    assert store.load_gallery().identities == ("bob",)


def test_an_older_change_arriving_late_is_ignored(store: EdgeStore) -> None:
    new = vec()
    store.apply_changes([upsert(5, "alice", new)], snapshot=False, latest_version=None)
    store.apply_changes([upsert(3, "alice", vec(), name="Old Name")], snapshot=False, latest_version=None)
    assert store.worker("alice")["version"] == 5
    assert store.display_names()["alice"] == "Alice"
    assert store.load_gallery().match(new).distance == pytest.approx(0.0, abs=1e-5)


def test_a_deletion_is_not_undone_by_an_older_upsert(store: EdgeStore) -> None:
    store.apply_changes([upsert(1, "alice"), delete(4, "alice")], snapshot=False, latest_version=4)
    store.apply_changes([upsert(2, "alice")], snapshot=False, latest_version=None)
    assert store.load_gallery().identities == ()
    row = store.worker("alice")
    assert row["deleted"] and row["encodings"] == 0 and row["version"] == 4
    assert "alice" not in store.display_names()


def test_changes_out_of_order_in_one_batch_end_in_the_newest_state(store: EdgeStore) -> None:
    store.apply_changes([delete(7, "alice"), upsert(6, "alice")], snapshot=False, latest_version=7)
    assert store.load_gallery().identities == ()
    store.apply_changes([upsert(8, "alice")], snapshot=False, latest_version=8)
    assert store.load_gallery().identities == ("alice",)


def test_suspended_workers_and_foreign_models_are_not_matched(store: EdgeStore) -> None:
    store.apply_changes(
        [upsert(1, "alice", active=False), upsert(2, "bob", model="dlib_resnet_v1/sp68"), upsert(3, "carol")],
        snapshot=False, latest_version=3,
    )
    assert store.load_gallery().identities == ("carol",)
    assert store.worker("alice")["encodings"] == 1  # kept while suspended, just never granted


def test_a_gap_does_not_advance_the_held_version(store: EdgeStore) -> None:
    store.apply_changes([upsert(1, "alice")], snapshot=False, latest_version=1)
    assert store.apply_changes([upsert(5, "bob")], snapshot=False, latest_version=None) == 1
    assert "bob" in store.load_gallery().identities
    assert store.apply_changes([], snapshot=False, latest_version=0) == 1  # never goes back on an incremental reply


def test_a_snapshot_replaces_everything(store: EdgeStore) -> None:
    # The station holds 40 (with a worker changed at 30); the server was reset and is at 3.
    store.apply_changes([upsert(1, "alice"), upsert(30, "bob")], snapshot=False, latest_version=40)
    version = store.apply_changes([upsert(3, "carol"), upsert(2, "dave")], snapshot=True, latest_version=3)
    assert version == 3 and store.gallery_version() == 3  # a snapshot may go back (the server was reset)
    assert sorted(store.load_gallery().identities) == ["carol", "dave"]
    assert store.worker("alice") is None and store.worker("bob") is None


def test_a_snapshot_keeps_live_changes_newer_than_itself(store: EdgeStore) -> None:
    # Held 2; the snapshot was taken at version 4, and meanwhile live change 5 deleted alice.
    store.apply_changes([upsert(1, "alice"), upsert(2, "bob")], snapshot=False, latest_version=2)
    store.apply_changes([delete(5, "alice")], snapshot=False, latest_version=None)
    version = store.apply_changes([upsert(1, "alice"), upsert(4, "carol")], snapshot=True, latest_version=4)
    assert version == 4
    assert store.load_gallery().identities == ("carol",)  # alice stays deleted, bob was not in the snapshot
    assert store.worker("alice")["version"] == 5


def test_a_failing_snapshot_leaves_the_old_gallery_untouched(store: EdgeStore) -> None:
    store.apply_changes([upsert(1, "alice"), upsert(2, "bob")], snapshot=False, latest_version=2)
    bad = upsert(3, "carol").model_copy(update={"encodings": (object(),)})  # cannot be stored
    with pytest.raises(AttributeError):
        store.apply_changes([upsert(4, "dave"), bad], snapshot=True, latest_version=4)
    assert sorted(store.load_gallery().identities) == ["alice", "bob"]
    assert store.gallery_version() == 2


def test_the_cache_survives_reopening(tmp_path: Path) -> None:
    a = vec()
    s = EdgeStore.open(tmp_path)
    s.apply_changes([upsert(9, "alice", a)], snapshot=False, latest_version=9)
    s.close()
    s = EdgeStore.open(tmp_path)
    try:
        assert s.gallery_version() == 9 and s.load_gallery().match(a).identity == "alice"
    finally:
        s.close()


def event(station: str = "st-1", **kw) -> EntryEvent:  # noqa: ANN003
    return EntryEvent(station_id=station, decision=Decision.GRANTED, worker_id="alice", **kw)


def test_outbox_round_trip_in_order(store: EdgeStore) -> None:
    events = [event(reason=f"n{i}") for i in range(5)]
    for e in events:
        store.enqueue(e)
    assert store.depth() == 5
    pending = store.pending(limit=3)
    assert [p[0] for p in pending] == [str(e.event_id) for e in events[:3]]
    eid, topic, payload = pending[0]
    assert topic == topics.entry("st-1")
    assert decode(payload, EntryEvent) == events[0]
    assert store.mark_delivered(eid) == 1 and store.mark_delivered(eid) == 0
    assert store.depth() == 4
    store.mark_delivered(*[str(e.event_id) for e in events[1:]])
    assert store.depth() == 0 and store.pending() == []


def test_enqueueing_the_same_event_twice_keeps_one(store: EdgeStore) -> None:
    e = event()
    store.enqueue(e)
    store.enqueue(e)
    assert store.depth() == 1


def test_the_outbox_survives_reopening_the_file(tmp_path: Path) -> None:
    s = EdgeStore.open(tmp_path)
    events = [event() for _ in range(3)]
    for e in events:
        s.enqueue(e)
    s.mark_delivered(events[0].event_id)
    s.close()
    # A different process (plain sqlite3) sees the committed rows too.
    con = sqlite3.connect(tmp_path / "edge.db")
    try:
        assert con.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2
    finally:
        con.close()
    s = EdgeStore.open(tmp_path)
    try:
        assert [p[0] for p in s.pending()] == [str(e.event_id) for e in events[1:]]
    finally:
        s.close()


def test_concurrent_writers_do_not_lose_events(store: EdgeStore) -> None:
    def writer(n: int) -> None:
        for _ in range(n):
            store.enqueue(event())

    def syncer() -> None:
        for v in range(1, 30):
            store.apply_changes([upsert(v, f"w{v}")], snapshot=False, latest_version=v)

    threads = [threading.Thread(target=writer, args=(40,)) for _ in range(3)] + [threading.Thread(target=syncer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.depth() == 120 and store.gallery_version() == 29


def test_an_unusable_data_dir_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create the data folder"):
        EdgeStore.open(blocker / "edge")
