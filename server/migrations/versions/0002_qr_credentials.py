"""QR credentials: one row per credential issued to a worker (the signed token itself is not stored).

Revision 0002 comes *after* 0003_sync_status_access in the chain: 0003 was
written against 0001 before this file existed, and an Alembic history needs a
single head. The numbers are only names; the order is 0001 -> 0003 -> 0002.
Never point 0003 at this revision (that would be a cycle).

Revision ID: 0002_qr_credentials
Revises: 0003_sync_status_access
Create Date: 2025-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_qr_credentials"
down_revision = "0003_sync_status_access"
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
