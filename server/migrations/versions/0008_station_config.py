"""Station config versions and the stations' answers as columns of ``stations``.

``config_version`` (with ``config_changed_at``) counts the changes of a
station's mode, opening hours and time zone: the version of the retained
config the server publishes (server/station_config.py); a station ignores a
config older than the one it applied. ``config_ack_*`` and
``config_applied_version`` keep each station's latest answer, stored by
whichever ingest process received it (several share the subscriptions).
Existing stations start at 0 (no config was ever pushed before this revision).

Plain ``ADD COLUMN`` on both databases, like 0007; ``config_version`` keeps its
server default so bulk loaders (bench/admin.py's COPY) need not name it.

Revision ID: 0008_station_config
Revises: 0007_entry_liveness
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_station_config"
down_revision = "0007_entry_liveness"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
_COLUMNS = (
    ("config_changed_at", UTC),
    ("config_ack_version", sa.BigInteger()),
    ("config_applied_version", sa.BigInteger()),
    ("config_ack_status", sa.String(16)),
    ("config_ack_detail", sa.String(200)),
    ("config_ack_at", UTC),
)


def upgrade() -> None:
    op.add_column("stations", sa.Column("config_version", sa.BigInteger(), nullable=False, server_default="0"))
    for name, type_ in _COLUMNS:
        op.add_column("stations", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place.
    for name, _ in reversed(_COLUMNS):
        op.drop_column("stations", name)
    op.drop_column("stations", "config_version")
