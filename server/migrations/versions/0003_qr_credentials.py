"""QR credentials: one row per credential issued to a worker (the signed token itself is not stored).

Revision ID: 0003_qr_credentials
Revises: 0002_sync_status_access
Create Date: 2025-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_qr_credentials"
down_revision = "0002_sync_status_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("credential_id", sa.String(12), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bound_version", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.worker_id"], name=op.f("fk_credentials_worker_id_workers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("credential_id", name=op.f("pk_credentials")),
    )
    op.create_index(op.f("ix_credentials_worker_id"), "credentials", ["worker_id"])


def downgrade() -> None:
    op.drop_table("credentials")
