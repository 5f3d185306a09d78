"""Retention: entry logs and denied-attempt snapshots are not kept longer than configured.

Entries older than ``retention_entries_days`` are either purged (deleted) or
anonymised (``retention_mode``): the worker id becomes NULL and the reason
loses the worker's id, name and credential id, so the counts per station, day,
hour, decision and kind stay for the usage reports while nobody can be traced.
Snapshots older than ``retention_snapshots_days`` are deleted; so is the
snapshot of any entry that is purged or anonymised.

"Older" means on both clocks: the station's (``occurred_at``) and the server's
(``received_at``), so a station whose clock runs years behind cannot make fresh
entries vanish, and events a station queued offline for weeks are kept for the
full period after they arrive.

Work is done in batches of ``retention_batch_size`` rows, each its own short
transaction, so a purge of millions of rows never holds locks for long and
ingest keeps writing meanwhile. Every run that has a policy writes one audit
row (actor ``system``, action ``retention.run``) with what it did.

:class:`RetentionJob` runs :func:`run_retention` on a background thread every
``retention_interval_s`` seconds; ``stop()`` interrupts a run between batches.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from server import audit
from server.config import RetentionSettings
from server.tables import Entry, EntrySnapshot, UsageVisitor, Worker, utcnow

log = logging.getLogger(__name__)

ACTION = "retention.run"
SCRUBBED = "***"
# "credential 0123456789ab: ..." (edge/qr.py): the id leads to the worker while the credential exists.
_CREDENTIAL_ID = re.compile(r"\b[0-9a-f]{12}\b")


@dataclass
class RetentionReport:
    """What one run did; also the audit row's detail."""

    mode: str
    entries_days: int | None
    snapshots_days: int | None
    entries_purged: int = 0
    entries_anonymised: int = 0
    snapshots_purged: int = 0
    visitors_purged: int = 0
    complete: bool = True
    """False when the run was stopped before it had done everything (the next run goes on)."""
    seconds: float = 0.0


def scrub_reason(reason: str, *, worker_id: str | None, name: str | None) -> str:
    """``reason`` without the worker's id, name or any credential id."""
    text = _CREDENTIAL_ID.sub(SCRUBBED, reason)
    if worker_id:
        text = re.sub(rf"(?<![\w-]){re.escape(worker_id)}(?![\w-])", SCRUBBED, text)
    if name and name.strip():
        name = name.strip()
        # Chinese names sit between other word characters; Latin ones only as whole words.
        pattern = rf"(?<!\w){re.escape(name)}(?!\w)" if name.isascii() else re.escape(name)
        text = re.sub(pattern, SCRUBBED, text, flags=re.IGNORECASE)
    return text


def run_retention(
    settings: RetentionSettings,
    sessions: sessionmaker[Session],
    *,
    now: datetime | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> RetentionReport | None:
    """Apply the retention policy once and audit it; None (and nothing audited) when no policy is set."""
    s = settings
    if s.retention_entries_days is None and s.retention_snapshots_days is None:
        return None
    start = time.monotonic()
    now = now or utcnow()
    report = RetentionReport(s.retention_mode, s.retention_entries_days, s.retention_snapshots_days)
    batch = s.retention_batch_size
    if s.retention_entries_days is not None:
        cutoff = now - timedelta(days=s.retention_entries_days)
        step = _purge_entries if s.retention_mode == "purge" else _anonymise_entries
        while keep_going():
            with sessions() as session:
                n = step(session, cutoff, batch)
                session.commit()
            if s.retention_mode == "purge":
                report.entries_purged += n
            else:
                report.entries_anonymised += n
            if n < batch:
                break
        else:
            report.complete = False
        if report.complete:
            # The dashboard's unique-worker index keeps a worker id with first/last visit times:
            # personal data about movements, so it ages out with the entries it was made from.
            with sessions() as session:
                report.visitors_purged = _purge_visitors(session, cutoff)
                session.commit()
    if s.retention_snapshots_days is not None and report.complete:
        cutoff = now - timedelta(days=s.retention_snapshots_days)
        while keep_going():
            with sessions() as session:
                n = _purge_snapshots(session, cutoff, batch)
                session.commit()
            report.snapshots_purged += n
            if n < batch:
                break
        else:
            report.complete = False
    report.seconds = round(time.monotonic() - start, 3)
    changed = report.entries_purged or report.entries_anonymised or report.snapshots_purged or report.visitors_purged
    if changed or not report.complete:
        # Audited when it changed something (or was cut short); an hourly run that found nothing
        # old would bury the admins' actions under 24 empty rows a day, so it is only logged.
        with sessions() as session:
            audit.record(session, actor=audit.SYSTEM, action=ACTION, target="entries", detail=asdict(report))
            session.commit()
    log.info("retention: %s", asdict(report))
    return report


def _purge_visitors(session: Session, cutoff: datetime) -> int:
    return session.execute(delete(UsageVisitor).where(UsageVisitor.last_visit_at < cutoff)).rowcount or 0


def _old(cutoff: datetime):  # noqa: ANN202  (a SQL condition)
    return (Entry.occurred_at < cutoff) & (Entry.received_at < cutoff)


def _purge_entries(session: Session, cutoff: datetime, batch: int) -> int:
    rows = session.execute(
        select(Entry.id, Entry.event_id).where(_old(cutoff)).order_by(Entry.occurred_at, Entry.id).limit(batch)
    ).all()
    if rows:
        _drop_snapshots(session, [r.event_id for r in rows])
        session.execute(delete(Entry).where(Entry.id.in_([r.id for r in rows])))
    return len(rows)


def _anonymise_entries(session: Session, cutoff: datetime, batch: int) -> int:
    # Anonymised rows have no worker any more, so each batch picks up where the last one ended.
    rows = session.execute(
        select(Entry.id, Entry.event_id, Entry.worker_id, Entry.reason, Worker.name)
        .outerjoin(Worker, Worker.worker_id == Entry.worker_id)
        .where(_old(cutoff), Entry.worker_id.is_not(None))
        .order_by(Entry.occurred_at, Entry.id)
        .limit(batch)
    ).all()
    if rows:
        _drop_snapshots(session, [r.event_id for r in rows])
        table = Entry.__table__
        stmt = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(worker_id=None, reason=bindparam("scrubbed"))
        )
        params = [
            {"row_id": r.id, "scrubbed": scrub_reason(r.reason, worker_id=r.worker_id, name=r.name)} for r in rows
        ]
        session.execute(stmt, params)  # one executemany
    return len(rows)


def _drop_snapshots(session: Session, event_ids: list[str]) -> None:
    session.execute(delete(EntrySnapshot).where(EntrySnapshot.event_id.in_(event_ids)))


def _purge_snapshots(session: Session, cutoff: datetime, batch: int) -> int:
    ids = session.scalars(
        select(EntrySnapshot.event_id)
        .where(EntrySnapshot.received_at < cutoff)
        .order_by(EntrySnapshot.received_at)
        .limit(batch)
    ).all()
    if ids:
        _drop_snapshots(session, list(ids))
    return len(ids)


class RetentionJob:
    """Runs the retention policy now and then every ``retention_interval_s`` on a daemon thread."""

    def __init__(self, settings: RetentionSettings, engine: Engine) -> None:
        self.settings = settings
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: RetentionReport | None = None
        self.runs = 0
        self.failures = 0

    def run_once(self, now: datetime | None = None) -> RetentionReport | None:
        """One run in the caller's thread (stop() interrupts it between batches)."""
        report = run_retention(self.settings, self._sessions, now=now, keep_going=lambda: not self._stop.is_set())
        self.last_report = report
        self.runs += 1
        return report

    def start(self) -> "RetentionJob":
        s = self.settings
        if s.retention_entries_days is None and s.retention_snapshots_days is None:
            log.info("retention is off: entries and snapshots are kept")
            return self
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="waystation-retention", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the retention thread did not stop within %.0f s", timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001  (a database hiccup: log it, try again next interval)
                self.failures += 1
                log.exception("retention run failed; retrying in %.0f s", self.settings.retention_interval_s)
            self._stop.wait(self.settings.retention_interval_s)
