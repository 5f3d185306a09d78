"""Admin web app and enrollment sessions: users, web sessions, login attempts, the audit log,
enrollment sessions with their staff, consents, worker photos and entry snapshots; worker
category/employer/session; station time zone, opening hours, mode and place.

New columns on existing tables have server defaults or are nullable, so existing rows stay valid.

Revision ID: 0004_admin_enrollment
Revises: 0003_qr_credentials
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_admin_enrollment"
down_revision = "0003_qr_credentials"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("category", sa.String(24), nullable=True))
        batch.add_column(sa.Column("employer", sa.String(100), nullable=True))
        batch.add_column(sa.Column("enrollment_session_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("enrolled_by", sa.String(64), nullable=True))
        batch.create_index(batch.f("ix_workers_enrollment_session_id"), ["enrollment_session_id"])
    with op.batch_alter_table("stations") as batch:
        # server_default only to fill existing rows; removed below so the ORM default rules.
        batch.add_column(sa.Column("time_zone", sa.String(64), nullable=False, server_default="Asia/Shanghai"))
        batch.add_column(sa.Column("opening_hours", sa.String(100), nullable=False, server_default="24h"))
        batch.add_column(sa.Column("mode", sa.String(16), nullable=False, server_default="face_or_qr"))
        batch.add_column(sa.Column("place", sa.String(200), nullable=False, server_default=""))
    with op.batch_alter_table("stations") as batch:
        for column in ("time_zone", "opening_hours", "mode", "place"):
            batch.alter_column(column, server_default=None)

    op.create_table(
        "users",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_login_at", UTC, nullable=True),
        sa.CheckConstraint("role IN ('admin', 'staff', 'auditor')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_web_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    op.create_index("ix_login_attempts_username_at", "login_attempts", ["username", "at"])
    op.create_index(op.f("ix_login_attempts_at"), "login_attempts", ["at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at_id", "audit_log", ["at", "id"])
    op.create_table(
        "enrollment_sessions",
        sa.Column("session_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("place", sa.String(200), nullable=False),
        sa.Column("starts_at", UTC, nullable=False),
        sa.Column("ends_at", UTC, nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_enrollment_sessions")),
    )
    op.create_table(
        "enrollment_session_staff",
        sa.Column("session_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["enrollment_sessions.session_id"],
            name=op.f("fk_enrollment_session_staff_session_id_enrollment_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_enrollment_session_staff_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "user_id", name=op.f("pk_enrollment_session_staff")),
    )
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("text_version", sa.String(32), nullable=False),
        sa.Column("allows_photo", sa.Boolean(), nullable=False),
        sa.Column("given_at", UTC, nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("enrollment_session_id", sa.Integer(), nullable=True),
        sa.Column("withdrawn_at", UTC, nullable=True),
        sa.Column("withdrawn_by", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.worker_id"], name=op.f("fk_consents_worker_id_workers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_consents")),
    )
    op.create_index(op.f("ix_consents_worker_id"), "consents", ["worker_id"])
    op.create_table(
        "worker_photos",
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.worker_id"], name=op.f("fk_worker_photos_worker_id_workers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_photos")),
    )
    op.create_table(
        "entry_snapshots",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_entry_snapshots")),
    )
    op.create_index(op.f("ix_entry_snapshots_received_at"), "entry_snapshots", ["received_at"])


def downgrade() -> None:
    for table in (
        "entry_snapshots",
        "worker_photos",
        "consents",
        "enrollment_session_staff",
        "enrollment_sessions",
        "audit_log",
        "login_attempts",
        "web_sessions",
        "users",
    ):
        op.drop_table(table)
    with op.batch_alter_table("stations") as batch:
        for column in ("place", "mode", "opening_hours", "time_zone"):
            batch.drop_column(column)
    with op.batch_alter_table("workers") as batch:
        batch.drop_index(batch.f("ix_workers_enrollment_session_id"))
        for column in ("enrolled_by", "enrollment_session_id", "employer", "category"):
            batch.drop_column(column)
