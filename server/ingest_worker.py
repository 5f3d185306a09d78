"""An MQTT ingest process on its own, beside the server (``python -m server ingest``).

A county's server runs ingest inside ``python -m server run``. A city or a
province with more stations than one process can store adds ingest workers:
each one joins the same MQTT 5 shared subscription group
(``mqtt_shared_group``), so the broker hands every message to one of them,
and storing is idempotent on ``event_id`` anyway (server/ingest_store.py). A
worker serves no HTTP and never migrates: the schema belongs to
``python -m server migrate`` (its own systemd unit), and a worker refuses to
start on a database that is not at the newest revision rather than write to a
schema it does not know.

Without ``mqtt_shared_group`` every worker would receive every message and do
the server's work again, so that is a configuration error (exit 2).
"""

from __future__ import annotations

import logging

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from server.config import ServerSettings
from server.db import alembic_config, make_engine
from server.errors import ConfigError, StartupError
from server.ingest import Ingest
from server.runtime import wait_for_database

log = logging.getLogger(__name__)


def check_worker_settings(settings: ServerSettings) -> None:
    """Raise ConfigError when these settings cannot run as one of several ingest workers."""
    if not settings.mqtt_shared_group:
        raise ConfigError([(
            "mqtt_shared_group",
            "not set: an ingest worker beside the server must share its subscriptions "
            '(set mqtt_shared_group and mqtt_protocol: "5" for the server and every worker)',
        )])


def check_schema_current(engine: Engine) -> str:
    """The database's revision; StartupError unless it is the newest this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as err:
        raise StartupError(f"cannot read the database's schema revision: {err.__class__.__name__}: {err}") from err
    if current != head:
        raise StartupError(
            f"the database schema is at {current or 'nothing (empty database)'}, this code needs {head}: "
            "run `python -m server migrate` (systemd: waystation-migrate.service) first"
        )
    return current


class IngestWorker:
    """Database check, then the MQTT ingest until :meth:`stop`."""

    def __init__(self, settings: ServerSettings) -> None:
        check_worker_settings(settings)
        self.settings = settings
        self.engine: Engine | None = None
        self.ingest: Ingest | None = None

    def start(self, connect_timeout: float = 10.0) -> "IngestWorker":
        try:
            s = self.settings
            self.engine = make_engine(s.resolved_database_url)
            wait_for_database(self.engine, s.database_wait_s)
            revision = check_schema_current(self.engine)
            self.ingest = Ingest(s, self.engine)
            self.ingest.start()
        except BaseException:
            self.stop()
            raise
        if not self.ingest.wait_connected(connect_timeout):
            # Not fatal: the link keeps retrying (a broker restarting), and the log says so.
            log.warning("not connected to the broker %s:%s yet; retrying in the background", s.mqtt_host, s.mqtt_port)
        log.info("ingest worker %s in group %s (schema %s)", s.mqtt_client_id, s.mqtt_shared_group, revision)
        return self

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
