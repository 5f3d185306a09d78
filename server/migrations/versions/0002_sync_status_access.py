"""Sync issue: station heartbeat details, ack times; worker validity windows and station access lists.

Every new column is nullable, so existing rows need no default and the
migration is a plain ADD COLUMN on PostgreSQL (batch copy on SQLite).

Revision ID: 0002_sync_status_access
Revises: 0001_initial
Create Date: 2025-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_sync_status_access"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

STATION_COLUMNS = (
    ("gallery_acked_at", sa.DateTime(timezone=True)),
    ("heartbeat_at", sa.DateTime(timezone=True)),
    ("camera_state", sa.String(32)),
    ("door_state", sa.String(32)),
    ("clock_offset_s", sa.Float()),
    ("uptime_s", sa.Float()),
    ("outbox_bytes", sa.BigInteger()),
    ("outbox_limit_bytes", sa.BigInteger()),
    ("outbox_alarm", sa.Boolean()),
    ("outbox_refused", sa.BigInteger()),
)
WORKER_COLUMNS = (
    ("valid_from", sa.DateTime(timezone=True)),
    ("valid_until", sa.DateTime(timezone=True)),
    ("stations", sa.JSON(none_as_null=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("stations") as batch:
        for name, type_ in STATION_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("workers") as batch:
        for name, type_ in WORKER_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for name, _type in reversed(WORKER_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("stations") as batch:
        for name, _type in reversed(STATION_COLUMNS):
            batch.drop_column(name)
