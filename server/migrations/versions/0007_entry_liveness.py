"""Liveness evidence on entries (entry/2): the check's outcome, blinks counted, largest head movement,
and how long the check took. All nullable: entry/1 events and QR entries have none.

Plain ``ADD COLUMN`` on both databases (no ``batch_alter_table``): rebuilding ``entries`` on
SQLite would drop the usage triggers of migration 0006.

Revision ID: 0007_entry_liveness
Revises: 0006_usage
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_entry_liveness"
down_revision = "0006_usage"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("liveness", sa.String(8)),
    ("blinks", sa.Integer()),
    ("head_motion", sa.Float()),
    ("liveness_ms", sa.Float()),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("entries", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (no table rebuild, so the triggers stay).
    for name, _ in reversed(_COLUMNS):
        op.drop_column("entries", name)
