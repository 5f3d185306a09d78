"""Database access: the only module that builds SQLAlchemy engines.

SQLite (the default, a file under ``data_dir``) and PostgreSQL
(``postgresql+psycopg://...``) are supported. On SQLite every connection
turns on write-ahead logging (readers never block the writer) and foreign
keys, and waits up to 30 s for a lock instead of failing at once.

SQLite transactions: pysqlite's default transaction handling is kept on
purpose. It begins a transaction at the first INSERT/UPDATE/DELETE, not at
the first SELECT, so a transaction that reads then writes takes the write
lock when it first writes and waits for it (busy timeout) rather than failing
with SQLITE_BUSY when another connection committed in between. The reads
before the first write are therefore not isolated; the services rely on
constraints and on the gallery log's order, not on such reads.

The schema is managed by Alembic (``server/migrations``);
:func:`upgrade_database` runs the migrations from code, no alembic.ini needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from server.tables import Base

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0

__all__ = ["Base", "alembic_config", "make_engine", "make_sessionmaker", "upgrade_database"]


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created and pragmas set."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Connections are used by the HTTP threadpool and the MQTT thread, one at a time each.
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A database server may drop idle connections (restart, failover): test each before use.
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # synchronous stays FULL (the default): an entry is acknowledged to the
        # broker once committed, so a commit must survive a power cut.
    finally:
        cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects returned by the services stay readable after commit.
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    """An Alembic Config pointing at the bundled migrations (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade_database(target: Engine | str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest), like ``alembic upgrade head``."""
    engine = make_engine(target) if isinstance(target, str) else target
    cfg = alembic_config()
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        if isinstance(target, str):
            engine.dispose()
    log.info("database schema is at %s (%s)", revision, engine.url.render_as_string(hide_password=True))
