"""The enrollment domain (server/enrolling.py) on a real SQLite file, real dlib models and real photos.

Consent comes first, a duplicate face is refused before anything is written,
and a withdrawal of consent removes the face data from the server and, through
the gallery change, from a station's enrollment cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.faces import FaceEngine
from core.imaging import load_image
from edge.store import EdgeStore
from enroll.messages import CONSENT_TEXT_VERSION
from models.messages import GalleryOp
from server import enrolling, users
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.enrollment import PhotoEncoder
from server.errors import NotFound
from server.tables import (
    AuditEvent, Consent, EnrollmentSession, FaceSample, GalleryChangeRow, Role, Worker, WorkerPhoto,
)

pytestmark = [pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"
TABLES = (Worker, FaceSample, Consent, WorkerPhoto, AuditEvent, GalleryChangeRow)
CONSENT = enrolling.ConsentGiven(CONSENT_TEXT_VERSION, allows_photo=True)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade_database(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def samples(faces: Path, face_engine: FaceEngine) -> dict[str, enrolling.SampleResult]:
    """Checked samples of real photos (made once: a template takes seconds), against an empty database."""
    encoder = PhotoEncoder(face_engine=face_engine)
    out = {}
    with _scratch_sessions() as scratch, scratch() as session:
        for key, rel in {"obama": "obama/obama.jpg", "obama2": "obama/obama2.jpg", "biden": "biden/biden.jpg"}.items():
            out[key] = enrolling.check_sample(session=session, encoder=encoder, data=(faces / EX / rel).read_bytes())
    return out


class _scratch_sessions:  # noqa: N801
    def __enter__(self) -> sessionmaker[Session]:
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self._engine = make_engine(f"sqlite:///{self._dir.name}/scratch.db")
        upgrade_database(self._engine)
        return make_sessionmaker(self._engine)

    def __exit__(self, *exc: object) -> None:
        self._engine.dispose()
        self._dir.cleanup()


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {t.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(t)) or 0 for t in TABLES}


def enroll(session: Session, sample: enrolling.SampleResult, name: str, **kwargs: object):  # noqa: ANN201
    base: dict[str, object] = dict(
        fields=enrolling.WorkerFields(name=name), consent=CONSENT, vectors=[sample.vector],
        model_id=sample.model_id, thumbnail=sample.thumbnail, actor="staff1",
    )
    base.update(kwargs)
    return enrolling.enroll(session=session, **base)  # type: ignore[arg-type]


def test_samples_are_usable_with_a_thumbnail(samples: dict[str, enrolling.SampleResult]) -> None:
    for name, sample in samples.items():
        assert sample.ok and sample.problems == (), name
        assert sample.vector is not None and sample.vector.shape == (128,)
        assert sample.duplicate is None  # nobody was enrolled yet
        assert sample.thumbnail is not None and sample.thumbnail[:2] == b"\xff\xd8"
        thumb = load_image(sample.thumbnail)
        assert max(thumb.shape[:2]) <= enrolling.THUMBNAIL_PX


def test_nothing_is_stored_without_consent(
    sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult]
) -> None:
    before = counts(sessions)
    with sessions() as session:
        with pytest.raises(enrolling.ConsentRequired, match="consent"):
            enroll(session, samples["obama"], "Barack Obama", consent=None)
        with pytest.raises(enrolling.ConsentRequired, match="1999-old"):
            enroll(session, samples["obama"], "Barack Obama", consent=enrolling.ConsentGiven("1999-old"))
    assert counts(sessions) == before == {t.__tablename__: 0 for t in TABLES}


def test_consent_is_recorded_with_the_worker_in_one_transaction(
    sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult]
) -> None:
    until = datetime.now(timezone.utc) + timedelta(days=365)
    with sessions() as session:
        fields = enrolling.WorkerFields(name="Barack Obama", phone="+86 138 0000 0001", category="courier",
                                        employer="SF Express", valid_until=until)
        worker, change = enroll(session, samples["obama"], "x", fields=fields)
        wid = worker.worker_id
    assert change.op is GalleryOp.UPSERT and len(change.encodings) == 1 and change.valid_until == until
    with sessions() as session:
        stored = session.get(Worker, wid)
        assert stored is not None and (stored.category, stored.employer, stored.enrolled_by) == (
            "courier", "SF Express", "staff1")
        (consent,) = session.scalars(sa.select(Consent).where(Consent.worker_id == wid))
        assert consent.text_version == CONSENT_TEXT_VERSION and consent.allows_photo and consent.recorded_by == "staff1"
        assert consent.given_at <= stored.created_at + timedelta(seconds=1) and consent.withdrawn_at is None
        photo = session.get(WorkerPhoto, wid)
        assert photo is not None and load_image(photo.jpeg).shape[0] <= enrolling.THUMBNAIL_PX
        (event,) = session.scalars(sa.select(AuditEvent))
        assert (event.actor, event.action, event.target) == ("staff1", "worker.enroll", wid)
        assert event.detail is not None and event.detail["photo_kept"] is True


def test_the_photo_is_kept_only_when_the_consent_allows_it(
    sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult]
) -> None:
    with sessions() as session:
        worker, _ = enroll(session, samples["biden"], "Joe Biden",
                           consent=enrolling.ConsentGiven(CONSENT_TEXT_VERSION, allows_photo=False))
        assert session.get(WorkerPhoto, worker.worker_id) is None
        assert session.scalar(sa.select(sa.func.count()).select_from(WorkerPhoto)) == 0


def test_a_duplicate_face_is_refused_before_anything_is_saved(
    sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult], faces: Path,
    face_engine: FaceEngine,
) -> None:
    with sessions() as session:
        first, _ = enroll(session, samples["obama"], "Barack Obama")
        first_id = first.worker_id
    # The sample check already warns: another photo of the same man.
    with sessions() as session:
        again = enrolling.check_sample(session=session, encoder=PhotoEncoder(face_engine=face_engine),
                                       data=(faces / EX / "obama/obama2.jpg").read_bytes())
    assert again.ok and again.duplicate is not None
    assert (again.duplicate.worker_id, again.duplicate.name) == (first_id, "Barack Obama")
    assert again.duplicate.distance <= enrolling.DUPLICATE_THRESHOLD
    before = counts(sessions)
    with sessions() as session, pytest.raises(enrolling.DuplicateFace) as refused:
        enroll(session, samples["obama2"], "B. Obama", fields=enrolling.WorkerFields("B. Obama", phone="+1 555 0100"))
    assert refused.value.duplicate.worker_id == first_id and "Barack Obama" in str(refused.value)
    assert counts(sessions) == before  # nothing written: no worker, consent, photo, audit row or change
    # Someone else is no duplicate; and staff may override the warning, which the audit trail keeps.
    with sessions() as session:
        biden, _ = enroll(session, samples["biden"], "Joe Biden")
        assert biden.worker_id != first_id
        twin, _ = enroll(session, samples["obama2"], "B. Obama", allow_duplicate=True)
        event = session.scalar(sa.select(AuditEvent).where(AuditEvent.target == twin.worker_id))
        assert event is not None and event.detail["duplicate_overridden"]["worker_id"] == first_id


def test_fields_are_checked_before_anything_is_saved(
    sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult]
) -> None:
    with sessions() as session:
        enroll(session, samples["obama"], "Barack Obama", fields=enrolling.WorkerFields("Barack Obama", phone="555 0101"))
    before = counts(sessions)
    bad = [
        (enrolling.PhoneTaken, enrolling.WorkerFields("Joe Biden", phone="555 0101")),
        (enrolling.EnrollmentError, enrolling.WorkerFields("Joe Biden", category="astronaut")),
        (enrolling.EnrollmentError, enrolling.WorkerFields("Joe Biden", session_id=999)),
        (enrolling.EnrollmentError, enrolling.WorkerFields(
            "Joe Biden", valid_until=datetime.now(timezone.utc) - timedelta(days=1))),
    ]
    for error, fields in bad:
        with sessions() as session, pytest.raises(error):
            enroll(session, samples["biden"], "Joe Biden", fields=fields)
    with sessions() as session, pytest.raises(enrolling.EnrollmentError):
        enroll(session, samples["biden"], "Joe Biden", vectors=[samples["biden"].vector] * 6)
    assert counts(sessions) == before


def test_sessions_with_their_staff(sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult]) -> None:
    with sessions() as session:
        for name, role in (("li", Role.STAFF), ("wang", Role.STAFF), ("zhao", Role.AUDITOR)):
            users.create_user(session, username=name, password="correct horse battery", role=role)
        session.commit()
    start = datetime(2026, 12, 1, 9, tzinfo=timezone(timedelta(hours=8)))
    with sessions() as session:
        info = enrolling.create_session(session=session, place="Chaoyang rest stop", starts_at=start,
                                        ends_at=start + timedelta(hours=3), staff=["wang", "li"], actor="admin")
        assert info.staff == ("li", "wang") and info.enrolled == 0 and info.created_by == "admin"
        with pytest.raises(enrolling.EnrollmentError, match="end after"):
            enrolling.create_session(session=session, place="x", starts_at=start, ends_at=start, staff=[], actor="a")
        with pytest.raises(enrolling.EnrollmentError, match="zhao"):  # an auditor does not enroll
            enrolling.create_session(session=session, place="x", starts_at=start, ends_at=start + timedelta(hours=1),
                                     staff=["zhao"], actor="a")
        enroll(session, samples["obama"], "Barack Obama",
               fields=enrolling.WorkerFields("Barack Obama", session_id=info.session_id))
    with sessions() as session:
        (listed,) = enrolling.list_sessions(session=session)
        assert listed.session_id == info.session_id and listed.enrolled == 1 and listed.starts_at == start
        assert session.scalar(sa.select(sa.func.count()).select_from(EnrollmentSession)) == 1
        with pytest.raises(NotFound):
            enrolling.get_session(session=session, session_id=info.session_id + 1)


def test_withdrawal_removes_the_face_here_and_at_a_station(
    sessions: sessionmaker[Session], samples: dict[str, enrolling.SampleResult], tmp_path: Path
) -> None:
    with sessions() as session:
        obama, enrolled = enroll(session, samples["obama"], "Barack Obama")
        biden, other = enroll(session, samples["biden"], "Joe Biden")
        wid = obama.worker_id
    station = EdgeStore.open(tmp_path / "edge")
    try:
        station.apply_changes([enrolled, other], snapshot=False, latest_version=other.version)
        assert set(station.load_gallery().identities) == {wid, biden.worker_id}

        with sessions() as session:
            change = enrolling.withdraw_consent(session=session, worker_id=wid, actor="staff2")
        assert change.op is GalleryOp.UPSERT and change.encodings == () and change.version > other.version
        with sessions() as session:
            assert session.scalar(sa.select(sa.func.count()).where(FaceSample.worker_id == wid)) == 0
            assert session.get(WorkerPhoto, wid) is None
            (consent,) = session.scalars(sa.select(Consent).where(Consent.worker_id == wid))
            assert consent.withdrawn_at is not None and consent.withdrawn_by == "staff2"
            assert session.get(Worker, wid) is not None  # the record stays; only the face data is gone
            assert session.scalar(sa.select(AuditEvent.action).where(AuditEvent.target == wid)
                                  .order_by(AuditEvent.id.desc()).limit(1)) == "worker.consent_withdraw"
            # Withdrawn faces are no longer duplicates of anyone.
            assert enrolling.find_duplicate(session=session, vectors=[samples["obama2"].vector]) is None
            with pytest.raises(enrolling.NothingToWithdraw):
                enrolling.withdraw_consent(session=session, worker_id=wid, actor="staff2")

        station.apply_changes([change], snapshot=False, latest_version=change.version)
        assert set(station.load_gallery().identities) == {biden.worker_id}
        assert station.worker(wid)["encodings"] == 0  # no face data of the worker left on the station
    finally:
        station.close()


def test_unusable_files_give_a_problem_code_not_an_error(
    sessions: sessionmaker[Session], face_engine: FaceEngine
) -> None:
    encoder = PhotoEncoder(face_engine=face_engine)
    with sessions() as session:
        for data, code in ((b"not an image at all", "unreadable_image"), (b"", "unreadable_image")):
            result = enrolling.check_sample(session=session, encoder=encoder, data=data)
            assert not result.ok and [p.code for p in result.problems] == [code]
            assert result.vector is None and result.thumbnail is None
