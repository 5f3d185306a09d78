"""Initial schema: stations, workers, face samples, the gallery change log, entries.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Written out rather than imported from server.tables, so this revision stays
# what it was when the tables change later.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit, and SQLite's rowid alias


def UTCDateTime() -> sa.DateTime:  # noqa: N802  (reads like the model's column type)
    return sa.DateTime(timezone=True)

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stations",
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("gallery_version_acked", sa.BigInteger(), nullable=False),
        sa.Column("agent_version", sa.String(200), nullable=False),
        sa.Column("outbox_depth", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_stations")),
    )
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_workers_status")),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
        sa.UniqueConstraint("phone", name=op.f("uq_workers_phone")),
    )
    op.create_table(
        "face_samples",
        sa.Column("id", BigId, nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(512), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.worker_id"],
            name=op.f("fk_face_samples_worker_id_workers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_samples")),
    )
    op.create_index(op.f("ix_face_samples_worker_id"), "face_samples", ["worker_id"])
    op.create_table(
        "gallery_changes",
        sa.Column("version", BigId, autoincrement=True, nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("op IN ('upsert', 'delete')", name=op.f("ck_gallery_changes_op")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_gallery_changes")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_gallery_changes_worker_version", "gallery_changes", ["worker_id", "version"])
    op.create_table(
        "entries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("distance", sa.Float(), nullable=True),
        sa.Column("second_distance", sa.Float(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("face_px", sa.Integer(), nullable=True),
        sa.Column("decision_ms", sa.Float(), nullable=True),
        sa.Column("gallery_version", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
        sa.UniqueConstraint("event_id", name=op.f("uq_entries_event_id")),
    )
    op.create_index("ix_entries_station_occurred", "entries", ["station_id", "occurred_at"])
    op.create_index("ix_entries_occurred_id", "entries", ["occurred_at", "id"])
    op.create_index("ix_entries_worker_occurred", "entries", ["worker_id", "occurred_at"])


def downgrade() -> None:
    op.drop_table("entries")
    op.drop_table("gallery_changes")
    op.drop_table("face_samples")
    op.drop_table("workers")
    op.drop_table("stations")
