"""Alembic environment for the server database.

Run from code by server.db.upgrade_database, which passes an open connection
in ``config.attributes["connection"]``. To draft a new revision against a
database at the current head::

    cfg = server.db.alembic_config()
    cfg.set_main_option("sqlalchemy.url", "sqlite:///data/server.db")
    alembic.command.revision(cfg, "what changed", autogenerate=True)

then read and correct the draft by hand (and keep tests/server/test_migrations.py green).
"""

from __future__ import annotations

from alembic import context

from server.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    from server.db import make_engine

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or run migrations with server.db.upgrade_database()")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            run_migrations(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use server.db.upgrade_database()")
run_online()
