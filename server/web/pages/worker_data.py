"""What the workers pages read: the search with keyset paging, and everything a worker's profile shows.

No router here: server/web/pages/workers.py (reading) and worker_actions.py
(changing) render what these functions return. Labels for stored codes
(category, status, decision, …) are marked with ``N_`` and translated when shown.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, func, or_, select, tuple_
from sqlalchemy.orm import Session

from core.i18n import DEFAULT_TIME_ZONE, zone
from server import credentials as creds
from server import gallery, stations
from server.entrylog import EntryFilter, EntryLogRow, entry_log_page
from server.errors import NotFound
from server.tables import WORKER_CATEGORIES, Consent, Credential, FaceSample, Station, Worker, WorkerPhoto, WorkerStatus
from server.web.templating import N_

PAGE_SIZE = 50
HISTORY_SIZE = 50
# Validity dates are whole days on this clock (the stations' default zone); see day_start.
VALIDITY_TIME_ZONE = DEFAULT_TIME_ZONE

CATEGORY_NAMES = {
    "courier": N_("Courier"),
    "food_delivery": N_("Food delivery"),
    "sanitation": N_("Sanitation"),
    "designated_driver": N_("Designated driver"),
    "other": N_("Other"),
}
STATUS_NAMES = {"active": N_("Active"), "suspended": N_("Suspended")}
CREDENTIAL_STATUS_NAMES = {
    "valid": N_("Valid"),
    "expired": N_("Expired"),
    "revoked": N_("Revoked"),
    "void": N_("Void: the worker changed since it was issued"),
}
DECISION_NAMES = {"granted": N_("Granted"), "denied": N_("Denied"), "spoof": N_("Spoof")}
KIND_NAMES = {
    "face": N_("Face"),
    "qr": N_("QR code"),
    "exit_request": N_("Exit button"),
    "forced_open": N_("Door forced open"),
    "held_open": N_("Door held open"),
    "tamper": N_("Tamper"),
}
assert set(CATEGORY_NAMES) == set(WORKER_CATEGORIES)


# -- search --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSearch:
    """The list's filters; empty means "any"."""

    q: str = ""
    status: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", self.q.strip()[:100])
        if self.status not in ("", *STATUS_NAMES):
            object.__setattr__(self, "status", "")
        if self.category not in ("", *CATEGORY_NAMES):
            object.__setattr__(self, "category", "")

    def query(self) -> dict[str, str]:
        """The filters that are set, for links to other pages of the same search."""
        return {k: v for k, v in (("q", self.q), ("status", self.status), ("category", self.category)) if v}


@dataclass(frozen=True)
class WorkerRow:
    worker: Worker
    samples: int


@dataclass(frozen=True)
class WorkerPage:
    rows: list[WorkerRow]
    total: int
    """How many workers match the search (all pages)."""
    next_cursor: str | None
    """The ``after`` of the next page; None on the last one."""


def _filtered(stmt: Select, search: WorkerSearch) -> Select:  # type: ignore[type-arg]
    if search.q:
        q = search.q
        stmt = stmt.where(
            or_(
                Worker.name.icontains(q, autoescape=True),
                Worker.phone.contains(q, autoescape=True),
                Worker.worker_id.startswith(q.lower(), autoescape=True),
            )
        )
    if search.status:
        stmt = stmt.where(Worker.status == search.status)
    if search.category:
        stmt = stmt.where(Worker.category == search.category)
    return stmt


def encode_cursor(name: str, worker_id: str) -> str:
    raw = json.dumps([name, worker_id], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str] | None:
    """The (name, worker id) a page continues after; None for a cursor this app did not make."""
    try:
        name, worker_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    return (name, worker_id) if isinstance(name, str) and isinstance(worker_id, str) else None


def search_workers(
    *, session: Session, search: WorkerSearch, after: str | None = None, limit: int = PAGE_SIZE
) -> WorkerPage:
    """One page of matching workers ordered by name, continuing after ``after`` (keyset: no OFFSET)."""
    total = session.scalar(_filtered(select(func.count()).select_from(Worker), search)) or 0
    stmt = _filtered(select(Worker), search).order_by(Worker.name, Worker.worker_id).limit(limit + 1)
    position = decode_cursor(after) if after else None
    if position is not None:
        stmt = stmt.where(tuple_(Worker.name, Worker.worker_id) > position)
    workers = list(session.scalars(stmt))
    more = len(workers) > limit
    workers = workers[:limit]
    counts = dict(
        session.execute(
            select(FaceSample.worker_id, func.count())
            .where(FaceSample.worker_id.in_([w.worker_id for w in workers]))
            .group_by(FaceSample.worker_id)
        ).all()
    ) if workers else {}
    rows = [WorkerRow(w, int(counts.get(w.worker_id, 0))) for w in workers]
    return WorkerPage(rows, int(total), encode_cursor(workers[-1].name, workers[-1].worker_id) if more else None)


# -- the profile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    worker: Worker
    samples: int
    has_photo: bool
    consents: list[Consent]
    entries: Sequence[EntryLogRow]
    credentials: list[tuple[Credential, creds.CredentialStatus]]
    confirmations: stations.ChangeConfirmations | None
    """The latest gallery change of the worker and which stations hold it."""
    stations: list[Station]
    """Every registered station (for the access list)."""


def load_profile(*, session: Session, worker_id: str) -> Profile:
    """Everything the profile page shows; NotFound if there is no such worker."""
    worker = gallery.get_worker(session=session, worker_id=worker_id)
    samples = session.scalar(select(func.count()).select_from(FaceSample).where(FaceSample.worker_id == worker_id))
    has_photo = session.scalar(select(WorkerPhoto.worker_id).where(WorkerPhoto.worker_id == worker_id)) is not None
    consents = list(session.scalars(select(Consent).where(Consent.worker_id == worker_id).order_by(Consent.given_at)))
    history = entry_log_page(session=session, filters=EntryFilter(worker_id=worker_id), limit=HISTORY_SIZE)
    try:
        confirmations: stations.ChangeConfirmations | None = stations.worker_confirmations(
            session=session, worker_id=worker_id
        )
    except NotFound:  # a worker written straight into the table, never announced to the stations
        confirmations = None
    return Profile(
        worker=worker,
        samples=int(samples or 0),
        has_photo=has_photo,
        consents=consents,
        entries=history.rows,
        credentials=creds.list_credentials(session=session, worker_id=worker_id),
        confirmations=confirmations,
        stations=list(stations.list_stations(session=session)),
    )


def is_active(worker: Worker) -> bool:
    return worker.status == WorkerStatus.ACTIVE.value


# -- validity days -------------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """Midnight at the start of ``day`` in the validity time zone."""
    return datetime.combine(day, time(0), tzinfo=zone(VALIDITY_TIME_ZONE))


def first_day(valid_from: datetime | None) -> date | None:
    """The first day a worker may enter, for the date field."""
    return None if valid_from is None else valid_from.astimezone(zone(VALIDITY_TIME_ZONE)).date()


def last_day(valid_until: datetime | None) -> date | None:
    """The last day a worker may enter: ``valid_until`` itself is the first moment they may not."""
    if valid_until is None:
        return None
    return (valid_until - timedelta(microseconds=1)).astimezone(zone(VALIDITY_TIME_ZONE)).date()
