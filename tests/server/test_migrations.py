"""The Alembic migrations build exactly the ORM's schema, on a real SQLite file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import alembic_config, make_engine, upgrade_database
from server.tables import Base, FaceSample, Station, Worker


@pytest.fixture
def engine(tmp_path: Path):  # noqa: ANN201
    eng = make_engine(f"sqlite:///{tmp_path / 'nested' / 'server.db'}")
    try:
        yield eng
    finally:
        eng.dispose()


def _diffs(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_migrated_schema_matches_the_models(engine: sa.Engine) -> None:
    upgrade_database(engine)
    assert _diffs(engine) == []


def test_compare_would_notice_a_missing_index(engine: sa.Engine) -> None:
    """Guards the test above: the comparison really looks at indexes."""
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_entries_occurred_id")
    assert _diffs(engine) != []


def test_upgrade_is_repeatable_and_downgrade_round_trips(engine: sa.Engine) -> None:
    upgrade_database(engine)
    upgrade_database(engine)  # already at head: nothing to do, no error
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade_database(engine)
    assert _diffs(engine) == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine: sa.Engine) -> None:
    upgrade_database(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with Session(engine) as session:
        session.add(FaceSample(worker_id="nobody", model_id="m", vector=b"\0" * 512))
        with pytest.raises(IntegrityError):
            session.commit()


def test_times_come_back_aware_in_utc(engine: sa.Engine) -> None:
    upgrade_database(engine)
    local = datetime(2025, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=8)))
    with Session(engine) as session:
        session.add(Station(station_id="s1", name="One", created_at=local))
        session.commit()
    with Session(engine) as session:
        stored = session.get(Station, "s1")
        assert stored is not None
        assert stored.created_at == local
        assert stored.created_at.utcoffset() == timedelta(0)
        session.add(Worker(worker_id="w", name="W", created_at=datetime(2025, 1, 1), updated_at=local))
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.commit()
