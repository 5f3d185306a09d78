"""PostgreSQL for the benchmarks: the server named by the PG* variables (pg_virtualenv sets them) and a fresh
database on it per run."""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa


def postgres_admin_url() -> str | None:
    """A URL for the server the PG* variables describe; None when they name none."""
    if not (os.environ.get("PGHOST") or os.environ.get("PGPORT")):
        return None
    return sa.URL.create(
        "postgresql+psycopg", username=os.environ.get("PGUSER", "postgres"), password=os.environ.get("PGPASSWORD"),
        host=os.environ.get("PGHOST", "localhost"), port=int(os.environ.get("PGPORT", "5432")),
        database=os.environ.get("PGDATABASE", "postgres"),
    ).render_as_string(hide_password=False)


def new_pg_database(admin_url: str, prefix: str = "bench") -> str:
    """Create an empty database on that server; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
