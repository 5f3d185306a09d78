"""Entry-log audit: indexes for filters on decision and on kind, so a page stays fast on millions of entries.

Without them a filter for a rare decision or kind (spoof attempts, tamper
alarms), combined with a worker category, walks the (occurred_at, id) index
until it has found a page: 0.3-0.7 s on 1,000,000 entries, for a filter that
matches nothing the whole table. With them the walk covers only the rows of
that decision or kind, newest first (bench/admin.py, docs/performance.md).

On PostgreSQL the indexes are partial: only the rows that are not the common
case (``decision <> 'granted'``: ~15%; kinds other than face and QR: ~4%), so
they cost ingest and disk little (6 MB and 2 MB per million entries); a filter
for the common value is served well by (occurred_at, id) anyway. SQLite cannot
use a partial index for ``decision = ?`` (it matches the predicate only
literally), so there they are plain indexes.

Indexes only: no table is rebuilt, so nothing here touches the usage triggers of 0006.

Revision ID: 0005_entry_indexes
Revises: 0004_admin_enrollment
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_entry_indexes"
down_revision = "0004_admin_enrollment"
branch_labels = None
depends_on = None

REFUSED = "decision <> 'granted'"
EVENTS = "kind <> 'face' AND kind <> 'qr'"


def upgrade() -> None:
    op.create_index(
        "ix_entries_decision_occurred", "entries", ["decision", "occurred_at", "id"], postgresql_where=sa.text(REFUSED)
    )
    op.create_index(
        "ix_entries_kind_occurred", "entries", ["kind", "occurred_at", "id"], postgresql_where=sa.text(EVENTS)
    )


def downgrade() -> None:
    op.drop_index("ix_entries_kind_occurred", table_name="entries")
    op.drop_index("ix_entries_decision_occurred", table_name="entries")
