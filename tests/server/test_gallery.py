"""The gallery services and sync paging against a real SQLite file (no broker, no HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models.encoding import FACE_MODEL_ID
from models.messages import (
    MAX_ENCODINGS_PER_WORKER,
    MAX_PAYLOAD_BYTES,
    GalleryChange,
    GalleryOp,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)
from server import gallery
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.errors import Conflict, NotFound
from server.sync import build_replies
from server.tables import FaceSample, Worker, WorkerStatus


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade_database(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _enroll(
    session: Session, rng: np.random.Generator, name: str, n: int = 1, phone: str | None = None
) -> tuple[Worker, GalleryChange]:
    vectors = [rng.normal(size=128).astype(np.float32) for _ in range(n)]
    return gallery.enroll_worker(session=session, name=name, vectors=vectors, model_id=FACE_MODEL_ID, phone=phone)


def test_versions_strictly_increase_and_changes_carry_current_state(
    sessions: sessionmaker[Session], rng: np.random.Generator
) -> None:
    with sessions() as s:
        ana, c1 = _enroll(s, rng, "Ana", n=2)
        ben, c2 = _enroll(s, rng, "Ben")
        _, c3 = gallery.set_status(session=s, worker_id=ana.worker_id, status=WorkerStatus.SUSPENDED)
        c4 = gallery.delete_worker(session=s, worker_id=ben.worker_id)
        assert [c.version for c in (c1, c2, c3, c4)] == sorted({c1.version, c2.version, c3.version, c4.version})
        assert gallery.latest_version(session=s) == c4.version

        changes = gallery.changes_since(session=s, version=0, limit=10)
    # One change per worker, at its latest version, oldest first.
    assert [(c.worker_id, c.version, c.op) for c in changes] == [
        (ana.worker_id, c3.version, GalleryOp.UPSERT),
        (ben.worker_id, c4.version, GalleryOp.DELETE),
    ]
    assert changes[0].active is False and len(changes[0].encodings) == 2
    assert changes[0].display_name == "Ana"
    assert changes[1].encodings == () and changes[1].display_name == ""


def test_stored_vector_is_the_enrolled_one(sessions: sessionmaker[Session], rng: np.random.Generator) -> None:
    vec = rng.normal(size=128).astype(np.float32)
    with sessions() as s:
        worker, change = gallery.enroll_worker(session=s, name="Cy", vectors=[vec], model_id=FACE_MODEL_ID)
        (blob,) = s.scalars(sa.select(FaceSample.vector).where(FaceSample.worker_id == worker.worker_id)).all()
    assert len(blob) == 512
    np.testing.assert_array_equal(gallery.vector_from_bytes(blob), vec)
    np.testing.assert_array_equal(change.encodings[0].vector(), vec)


def test_delete_removes_face_data(sessions: sessionmaker[Session], rng: np.random.Generator) -> None:
    with sessions() as s:
        worker, _ = _enroll(s, rng, "Dee", n=3, phone="+86 138 0000 0000")
        gallery.delete_worker(session=s, worker_id=worker.worker_id)
        assert s.scalar(sa.select(sa.func.count()).select_from(FaceSample)) == 0
        with pytest.raises(NotFound):
            gallery.delete_worker(session=s, worker_id=worker.worker_id)
        # The phone number is free again: nothing personal is left behind.
        _enroll(s, rng, "Dee again", phone="+86 138 0000 0000")


def test_duplicate_phone_is_a_conflict_and_issues_no_version(
    sessions: sessionmaker[Session], rng: np.random.Generator
) -> None:
    with sessions() as s:
        _enroll(s, rng, "Eve", phone="555-0100")
        before = gallery.latest_version(session=s)
        with pytest.raises(Conflict, match="555-0100"):
            _enroll(s, rng, "Eve two", phone="555-0100")
        assert gallery.latest_version(session=s) == before
        assert len(gallery.list_workers(session=s)) == 1


def test_paging_by_last_version_visits_every_worker_once(
    sessions: sessionmaker[Session], rng: np.random.Generator
) -> None:
    with sessions() as s:
        workers = [_enroll(s, rng, f"W{i}")[0] for i in range(7)]
        # Touch some again so their latest version moves past the others.
        for w in workers[:3]:
            gallery.set_status(session=s, worker_id=w.worker_id, status=WorkerStatus.SUSPENDED)
        seen: list[str] = []
        version = 0
        while page := gallery.changes_since(session=s, version=version, limit=2):
            seen += [c.worker_id for c in page]
            version = page[-1].version
    assert sorted(seen) == sorted(w.worker_id for w in workers)
    assert len(seen) == len(set(seen))


def test_snapshot_reply_when_station_is_ahead_lists_only_current_workers(
    sessions: sessionmaker[Session], rng: np.random.Generator
) -> None:
    with sessions() as s:
        keep = [_enroll(s, rng, f"K{i}")[0].worker_id for i in range(3)]
        gone, _ = _enroll(s, rng, "Gone")
        gallery.delete_worker(session=s, worker_id=gone.worker_id)
        latest = gallery.latest_version(session=s)
        request = SyncRequest(station_id="s1", since_version=latest + 50)
        replies = list(build_replies(session=s, request=request, page_size=2))
    assert all(r.snapshot for r in replies)
    assert [r.page for r in replies] == [0, 1]
    assert [r.more for r in replies] == [True, False]
    assert sorted(c.worker_id for r in replies for c in r.changes) == sorted(keep)
    assert all(r.latest_version == latest for r in replies)


def test_up_to_date_station_gets_one_empty_page(sessions: sessionmaker[Session], rng: np.random.Generator) -> None:
    with sessions() as s:
        _enroll(s, rng, "Only")
        latest = gallery.latest_version(session=s)
        (reply,) = build_replies(session=s, request=SyncRequest(station_id="s1", since_version=latest), page_size=10)
    assert reply.changes == () and reply.more is False and reply.snapshot is False
    assert reply.latest_version == latest


def test_pages_stay_under_the_payload_limit(sessions: sessionmaker[Session], rng: np.random.Generator) -> None:
    """40 workers with the most encodings allowed would be ~480 kB in one page of 200."""
    with sessions() as s:
        for i in range(40):
            _enroll(s, rng, f"Full {i} " + "名" * 20, n=MAX_ENCODINGS_PER_WORKER)
        request = SyncRequest(station_id="s1", since_version=0, request_id=uuid.uuid4())
        replies = list(build_replies(session=s, request=request, page_size=200))
    assert len(replies) > 1
    payloads = [encode(r) for r in replies]  # would raise PayloadTooLarge
    assert max(len(p) for p in payloads) <= MAX_PAYLOAD_BYTES
    decoded = [decode(p, SyncReply) for p in payloads]
    assert sum(len(r.changes) for r in decoded) == 40
    assert [r.more for r in decoded] == [True] * (len(decoded) - 1) + [False]
