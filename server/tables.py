"""The server's database tables (SQLAlchemy 2.x typed ORM).

The schema is created and changed only by the Alembic migrations in
``server/migrations``; a test checks that they produce exactly this metadata.
Timestamps are stored in UTC and always come back timezone-aware, on SQLite
(which has no time zone type) as on PostgreSQL.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    JSON,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names: migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit id that is still SQLite's INTEGER PRIMARY KEY (the rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: the server stores only timezone-aware times")
        utc = value.astimezone(timezone.utc)
        # SQLite keeps the text without an offset; UTC everywhere keeps it sortable.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class WorkerStatus(str, enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}


class Station(Base):
    """A registered station; only registered stations may send entries or sync."""

    __tablename__ = "stations"

    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime | None]
    gallery_version_acked: Mapped[int] = mapped_column(BigInteger, default=0)
    agent_version: Mapped[str] = mapped_column(String(200), default="")
    outbox_depth: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sync issue (migration 0002): when the acked version arrived, and the latest heartbeat.
    gallery_acked_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    camera_state: Mapped[str | None] = mapped_column(String(32))
    door_state: Mapped[str | None] = mapped_column(String(32))
    clock_offset_s: Mapped[float | None] = mapped_column(Float)
    uptime_s: Mapped[float | None] = mapped_column(Float)
    outbox_bytes: Mapped[int | None] = mapped_column(BigInteger)
    outbox_limit_bytes: Mapped[int | None] = mapped_column(BigInteger)
    outbox_alarm: Mapped[bool | None] = mapped_column(Boolean)
    outbox_refused: Mapped[int | None] = mapped_column(BigInteger)
    # Admin issue (migration 0004): what the admins set for the station.
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    opening_hours: Mapped[str] = mapped_column(String(100), default="24h")
    mode: Mapped[str] = mapped_column(String(16), default="face_or_qr")
    place: Mapped[str] = mapped_column(String(200), default="")
    # Station config (migration 0008): the version of mode/opening_hours/time_zone, bumped in the same
    # transaction as each change of them (server/station_config.py), and the station's latest answer.
    # The server default also fills rows written by bulk loaders (bench/admin.py COPY).
    config_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    config_changed_at: Mapped[datetime | None]
    config_ack_version: Mapped[int | None] = mapped_column(BigInteger)
    config_applied_version: Mapped[int | None] = mapped_column(BigInteger)
    config_ack_status: Mapped[str | None] = mapped_column(String(16))
    config_ack_detail: Mapped[str | None] = mapped_column(String(200))
    config_ack_at: Mapped[datetime | None]


class Worker(Base):
    """A person who may enter. Deleting the row deletes their personal and face data."""

    __tablename__ = "workers"
    __table_args__ = (CheckConstraint("status IN ('active', 'suspended')", name="status"),)

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkerStatus.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Sync issue (migration 0002): never granted outside [valid_from, valid_until);
    # ``stations`` None = every station, else only the listed station ids.
    valid_from: Mapped[datetime | None]
    valid_until: Mapped[datetime | None]
    stations: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    # Enrollment issue (migration 0004): who the worker is, for usage reports.
    category: Mapped[str | None] = mapped_column(String(24))
    employer: Mapped[str | None] = mapped_column(String(100))
    enrollment_session_id: Mapped[int | None] = mapped_column(Integer, index=True)
    enrolled_by: Mapped[str | None] = mapped_column(String(64))

    samples: Mapped[list[FaceSample]] = relationship(
        back_populates="worker", cascade="all, delete-orphan", passive_deletes=True, order_by="FaceSample.id"
    )

    @property
    def active(self) -> bool:
        return self.status == WorkerStatus.ACTIVE.value


class FaceSample(Base):
    """One face encoding of a worker: 128 little-endian float32 (512 bytes). Photos are never stored."""

    __tablename__ = "face_samples"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.worker_id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    worker: Mapped[Worker] = relationship(back_populates="samples")


class GalleryChangeRow(Base):
    """The gallery's change log: ``version`` is the server-wide, strictly increasing gallery version.

    Rows are only ever appended (AUTOINCREMENT on SQLite: a version is never
    reused). What a change *carries* is read from the current state of the
    worker when it is sent, so the log holds no face data.
    """

    __tablename__ = "gallery_changes"
    __table_args__ = (
        CheckConstraint("op IN ('upsert', 'delete')", name="op"),
        Index("ix_gallery_changes_worker_version", "worker_id", "version"),
        {"sqlite_autoincrement": True},
    )

    version: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    op: Mapped[str] = mapped_column(String(8))
    worker_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Entry(Base):
    """One door event as a station reported it; ``event_id`` makes ingest idempotent."""

    __tablename__ = "entries"
    __table_args__ = (
        Index("ix_entries_station_occurred", "station_id", "occurred_at"),
        Index("ix_entries_occurred_id", "occurred_at", "id"),
        Index("ix_entries_worker_occurred", "worker_id", "occurred_at"),
        # Entry-log filters on a rare decision or kind (migration 0005): partial on PostgreSQL.
        Index("ix_entries_decision_occurred", "decision", "occurred_at", "id", postgresql_where="decision <> 'granted'"),
        Index("ix_entries_kind_occurred", "kind", "occurred_at", "id", postgresql_where="kind <> 'face' AND kind <> 'qr'"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    station_id: Mapped[str] = mapped_column(String(63))
    worker_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200), default="")
    distance: Mapped[float | None] = mapped_column(Float)
    second_distance: Mapped[float | None] = mapped_column(Float)
    frames: Mapped[int | None] = mapped_column(Integer)
    face_px: Mapped[int | None] = mapped_column(Integer)
    decision_ms: Mapped[float | None] = mapped_column(Float)
    gallery_version: Mapped[int] = mapped_column(BigInteger, default=0)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Liveness evidence (entry/2, migration 0007); null for entry/1 events and QR entries.
    liveness: Mapped[str | None] = mapped_column(String(8))
    blinks: Mapped[int | None] = mapped_column(Integer)
    head_motion: Mapped[float | None] = mapped_column(Float)
    liveness_ms: Mapped[float | None] = mapped_column(Float)


class Credential(Base):
    """A QR credential issued to a worker (migration 0003). The token is not stored: Ed25519 signatures are
    deterministic, so the same token is signed again when it must be shown again.

    ``bound_version`` is the worker's gallery version at issue; stations refuse the
    credential once they hold a newer one (see server/credentials.py).
    """

    __tablename__ = "credentials"

    credential_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.worker_id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    bound_version: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime | None]


# -- Enrollment and admin issues (migration 0004) ---------------------------------------------

WORKER_CATEGORIES = ("courier", "food_delivery", "sanitation", "designated_driver", "other")


class Role(str, enum.Enum):
    """What a web user may do: admins everything, staff enroll, auditors read logs and usage."""

    ADMIN = "admin"
    STAFF = "staff"
    AUDITOR = "auditor"


class User(Base):
    """A person who signs in to the admin web app. No default users exist: the first admin is made by
    ``python -m server create-admin``. ``password_hash`` is an argon2id hash (argon2-cffi)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'staff', 'auditor')", name="role"),)

    user_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8), default="zh_CN")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so a leaked
    database does not let anyone sign in. ``csrf_token`` is checked on every state-changing request."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    remote_addr: Mapped[str] = mapped_column(String(64), default="")


class LoginAttempt(Base):
    """A failed sign-in, for rate limiting across processes and restarts; old rows are purged."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_username_at", "username", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEvent(Base):
    """One admin action: who did what to what, and when. Rows are only appended."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at_id", "at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))  # a username, or "system", "cli", "api-token"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "worker.suspend", "entries.export"
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class EnrollmentSession(Base):
    """A time and place where staff enroll workers."""

    __tablename__ = "enrollment_sessions"

    session_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    place: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    note: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    staff: Mapped[list[SessionStaff]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class SessionStaff(Base):
    """A staff member assigned to an enrollment session."""

    __tablename__ = "enrollment_session_staff"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("enrollment_sessions.session_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True)


class Consent(Base):
    """A worker's separate consent to face processing (PIPL art. 29), recorded before any face data.

    ``allows_photo``: the worker also agreed that a small photo is kept so admins can recognise them.
    Withdrawal (``withdrawn_at``) deletes the face data everywhere; the record itself stays as proof
    until the worker is deleted.
    """

    __tablename__ = "consents"

    consent_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.worker_id", ondelete="CASCADE"), index=True)
    text_version: Mapped[str] = mapped_column(String(32))
    allows_photo: Mapped[bool] = mapped_column(Boolean, default=False)
    given_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(64))
    enrollment_session_id: Mapped[int | None] = mapped_column(Integer)
    withdrawn_at: Mapped[datetime | None]
    withdrawn_by: Mapped[str | None] = mapped_column(String(64))


class WorkerPhoto(Base):
    """A small JPEG thumbnail of a worker, kept only when their consent allows it."""

    __tablename__ = "worker_photos"

    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.worker_id", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EntrySnapshot(Base):
    """A camera snapshot of a denied attempt, only from stations where snapshots are enabled; purged by
    the retention job."""

    __tablename__ = "entry_snapshots"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(63))
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# -- Usage dashboard (migration 0006) -------------------------------------------------------------

VISIT_KINDS = ("face", "qr")
"""The kinds of entry that are visits when granted (server/usage.py)."""
USAGE_CATEGORY_COLUMNS = {category: f"cat_{category}" for category in WORKER_CATEGORIES}
"""The usage_counts column counting the visits of each worker category."""
USAGE_HOUR_COLUMNS = tuple(f"visits_h{h:02d}" for h in range(24))
"""The usage_counts columns counting the visits in each UTC hour of the day."""
USAGE_TOTAL_COLUMNS = ("visits", "visits_qr", *USAGE_CATEGORY_COLUMNS.values(), "denied", "unknown", "spoof", "exits",
                       "alarms")
"""What usage_hours counts; usage_counts counts the visits per hour besides (USAGE_COUNT_COLUMNS)."""
USAGE_COUNT_COLUMNS = (*USAGE_HOUR_COLUMNS, *USAGE_TOTAL_COLUMNS)

USAGE_COUNTS = Table(
    "usage_counts",
    Base.metadata,
    Column("period", String(5), primary_key=True),
    Column("station_id", String(63), primary_key=True),
    Column("start_s", BigInteger, primary_key=True, autoincrement=False),
    *(Column(name, Integer, nullable=False) for name in USAGE_COUNT_COLUMNS),
    CheckConstraint("period IN ('day', 'month')", name="period"),
    Index("ix_usage_counts_period_start", "period", "start_s"),
)
"""Entries counted per station and UTC ``period`` ("day" or "month"; ``start_s``: its start in seconds since
1970), and per day over all stations (``station_id`` ""), for the usage dashboard (server/usage.py). Only
written by database triggers on ``entries`` (migration 0006), in the same transaction as each insert, so
every way of storing entries counts. A visit is a granted face or QR entry; ``visits_hNN`` are the visits
in UTC hour NN; ``cat_*`` count visits by the worker's category at the time (``visits`` minus their sum:
no category). Rows are never decremented: the counts hold no personal data and outlive the entries'
retention."""

USAGE_HOURS = Table(
    "usage_hours",
    Base.metadata,
    Column("hour_s", BigInteger, primary_key=True, autoincrement=False),
    Column("station_id", String(63), primary_key=True),
    *(Column(name, Integer, nullable=False) for name in USAGE_TOTAL_COLUMNS),
)
"""The same counts per station and UTC hour (``hour_s``: its start), kept by the same triggers: the hours at the
ends of a range that are not whole UTC days (a day in Shanghai starts at 16:00 UTC)."""


class UsageVisitor(Base):
    """Each worker's first and last visit, at each station and (``station_id`` "") at any; kept by the
    same triggers. Counting unique workers in a range reads these instead of the entries (server/usage_workers.py)."""

    __tablename__ = "usage_visitors"
    __table_args__ = (Index("ix_usage_visitors_station_last", "station_id", "last_visit_at", "first_visit_at"),)

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    first_visit_at: Mapped[datetime]
    last_visit_at: Mapped[datetime]
