"""Retention on SQLite and PostgreSQL: exactly the old entries are purged or anonymised, old snapshots go,
every run is audited, and the scheduled job starts, runs and stops."""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from models.messages import Decision, EntryEvent
from server.config import ServerSettings
from server.db import make_sessionmaker
from server.errors import ConfigError
from server.ingest_store import store_events
from server.retention import ACTION, RetentionJob, RetentionSettings, run_retention, scrub_reason
from server.tables import AuditEvent, Entry, EntrySnapshot, Worker

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)
CREDENTIAL = "0a1b2c3d4e5f"


def seed(sessions: sessionmaker[Session]) -> dict[str, set[str]]:
    """Entries and snapshots around a 30-day limit; returns event ids by what retention must do."""
    groups: dict[str, list[EntryEvent]] = {"old": [], "recent": [], "late": []}
    with sessions() as session:
        session.add(Worker(worker_id="w-zhang", name="张三", category="courier"))
        session.add(Worker(worker_id="w-lee", name="Lee", category="sanitation"))
        session.commit()
        for i in range(45):  # 45 days back, one day apart, at two stations
            at = NOW - timedelta(days=i, hours=1)
            who = ("w-zhang", "w-lee", None)[i % 3]
            reason = {
                "w-zhang": f"credential {CREDENTIAL}: face verified 1:1: matched 张三",
                "w-lee": "matched Lee (w-lee); Leeds gate",
                None: "unknown face",
            }[who]
            event = EntryEvent(
                station_id=("s1", "s2")[i % 2],
                worker_id=who,
                decision=Decision.GRANTED if who else Decision.DENIED,
                reason=reason,
                occurred_at=at,
            )
            group = "old" if i >= 30 else "recent"  # day 30, an hour more: old on both clocks
            store_events(session=session, events=[event], received_at=at + timedelta(minutes=5))
            groups[group].append(event)
        # Queued at a station for 40 days, received yesterday: kept for the full period after arrival.
        late = EntryEvent(
            station_id="s1", worker_id="w-zhang", decision=Decision.GRANTED, occurred_at=NOW - timedelta(days=40)
        )
        store_events(session=session, events=[late], received_at=NOW - timedelta(days=1))
        groups["late"].append(late)
        # Snapshots of denied attempts: one per entry without a worker, received with it.
        for event in groups["old"] + groups["recent"]:
            if event.worker_id is None:
                session.add(EntrySnapshot(
                    event_id=str(event.event_id), station_id=event.station_id, jpeg=b"\xff\xd8jpeg",
                    received_at=event.occurred_at + timedelta(minutes=5),
                ))
        session.commit()
    return {name: {str(e.event_id) for e in events} for name, events in groups.items()}


def rows(sessions: sessionmaker[Session]) -> dict[str, Entry]:
    with sessions() as session:
        return {e.event_id: e for e in session.scalars(select(Entry))}


def snapshots(sessions: sessionmaker[Session]) -> dict[str, datetime]:
    with sessions() as session:
        return {s.event_id: s.received_at for s in session.scalars(select(EntrySnapshot))}


def audit_rows(sessions: sessionmaker[Session]) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == ACTION).order_by(AuditEvent.id)))


def test_purge_removes_exactly_the_old_entries_and_snapshots_and_is_audited(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    ids = seed(sessions)
    snaps_before = snapshots(sessions)
    settings = RetentionSettings(
        retention_entries_days=30, retention_mode="purge", retention_snapshots_days=10, retention_batch_size=10
    )
    report = run_retention(settings, sessions, now=NOW)
    assert report is not None and report.complete
    left = rows(sessions)
    assert set(left) == ids["recent"] | ids["late"], "purged the wrong entries"
    assert report.entries_purged == len(ids["old"]) == 15  # a full batch of 10, then 5
    snaps = snapshots(sessions)
    assert all(received >= NOW - timedelta(days=10) for received in snaps.values())
    assert set(snaps) == {e for e, at in snaps_before.items() if e in ids["recent"] and at >= NOW - timedelta(days=10)}
    assert report.snapshots_purged == len(snaps_before) - len(snaps) - len(set(snaps_before) & ids["old"])

    again = run_retention(settings, sessions, now=NOW)
    assert again is not None and (again.entries_purged, again.snapshots_purged) == (0, 0)
    trail = audit_rows(sessions)
    # The run that purged is audited; the second found nothing old and is only logged.
    assert [(a.actor, a.target) for a in trail] == [("system", "entries")]
    assert trail[0].detail is not None and trail[0].detail["entries_purged"] == 15
    assert trail[0].detail["mode"] == "purge" and trail[0].detail["entries_days"] == 30


def test_anonymise_keeps_the_counts_but_nobody_can_be_traced(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    ids = seed(sessions)
    before = rows(sessions)
    settings = RetentionSettings(retention_entries_days=30, retention_mode="anonymise", retention_batch_size=10)
    report = run_retention(settings, sessions, now=NOW)
    assert report is not None and report.complete and report.entries_purged == 0
    after = rows(sessions)
    assert set(after) == set(before), "anonymising must not delete entries"

    def counts(entries: dict[str, Entry]) -> Counter[tuple[str, str, datetime]]:
        return Counter((e.station_id, e.decision, e.occurred_at) for e in entries.values())

    assert counts(after) == counts(before), "usage statistics changed"
    old_with_worker = {e for e in ids["old"] if before[e].worker_id is not None}
    assert report.entries_anonymised == len(old_with_worker) == 10
    for event_id in ids["old"]:
        entry = after[event_id]
        assert entry.worker_id is None
        for secret in ("张三", "w-zhang", "w-lee", CREDENTIAL):
            assert secret not in entry.reason, f"{secret!r} left in {entry.reason!r}"
        assert not re.search(r"\bLee\b", entry.reason), entry.reason
    lee = next(after[e].reason for e in old_with_worker if before[e].worker_id == "w-lee")
    assert lee == "matched *** (***); Leeds gate"  # only whole names go: "Leeds" stays
    zhang = next(after[e].reason for e in old_with_worker if before[e].worker_id == "w-zhang")
    assert zhang == "credential ***: face verified 1:1: matched ***"
    for event_id in ids["recent"] | ids["late"]:  # untouched
        was, now = before[event_id], after[event_id]
        assert (now.worker_id, now.reason) == (was.worker_id, was.reason)
    # Snapshots are personal data too: default retention (30 days) removes the old ones.
    assert all(received >= NOW - timedelta(days=30) for received in snapshots(sessions).values())
    assert audit_rows(sessions)[0].detail["entries_anonymised"] == 10  # type: ignore[index]


def test_a_stopped_run_ends_between_batches_and_says_so(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    ids = seed(sessions)
    calls = iter(range(100))
    settings = RetentionSettings(retention_entries_days=30, retention_mode="purge", retention_batch_size=10)
    report = run_retention(settings, sessions, now=NOW, keep_going=lambda: next(calls) < 1)
    assert report is not None and not report.complete and report.entries_purged == 10
    assert len(rows(sessions)) == sum(len(v) for v in ids.values()) - 10
    assert audit_rows(sessions)[-1].detail["complete"] is False  # type: ignore[index]


def test_job_runs_at_start_and_on_schedule_and_stops_promptly(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    seed(sessions)
    settings = RetentionSettings(retention_entries_days=30, retention_mode="purge", retention_interval_s=1.0)
    job = RetentionJob(settings, engine)
    job.start()
    try:
        deadline = time.monotonic() + 20
        while job.runs < 2:  # the first at start, the second a second later
            assert time.monotonic() < deadline, "the job did not run on schedule"
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        job.stop()
        assert time.monotonic() - started < 5
    assert job.failures == 0 and len(audit_rows(sessions)) == 1  # only the run that purged is audited
    assert job.last_report is not None and job.last_report.entries_purged == 0  # the first run did it all
    assert not any(t.name == "waystation-retention" and t.is_alive() for t in threading.enumerate())

    off = RetentionJob(RetentionSettings(retention_entries_days=None, retention_snapshots_days=None), engine).start()
    off.stop()
    assert off.runs == 0 and run_retention(off.settings, sessions) is None


def test_scrub_reason() -> None:
    assert scrub_reason("matched 王五", worker_id=None, name="王五") == "matched ***"
    assert scrub_reason("worker w1 suspended; w10 ok", worker_id="w1", name=None) == "worker *** suspended; w10 ok"
    assert scrub_reason("Ann met ANN at Annex", worker_id=None, name="Ann") == "*** met *** at Annex"
    assert scrub_reason("unknown face", worker_id="x", name="") == "unknown face"


def test_server_settings_carry_the_retention_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("WAYSTATION_SERVER_"):
            monkeypatch.delenv(key)
    for name, field in RetentionSettings.model_fields.items():
        theirs = ServerSettings.model_fields[name]
        assert (theirs.annotation, theirs.default, theirs.metadata) == (field.annotation, field.default, field.metadata)
    monkeypatch.setenv("WAYSTATION_SERVER_RETENTION_MODE", "purge")
    monkeypatch.setenv("WAYSTATION_SERVER_RETENTION_ENTRIES_DAYS", "365")
    settings = ServerSettings.load(api_token="t" * 20)
    got = (settings.retention_mode, settings.retention_entries_days, settings.retention_snapshots_days)
    assert got == ("purge", 365, 30)
    monkeypatch.setenv("WAYSTATION_SERVER_RETENTION_MODE", "shred")
    with pytest.raises(ConfigError, match="retention_mode"):
        ServerSettings.load(api_token="t" * 20)
