"""The whole server in one object: database, MQTT ingest, the retention job and the HTTP API (with the admin pages).

>>> with ServerRuntime(settings) as server:   # migrates, connects, serves
...     httpx.get(server.url + "/api/health")

``start()`` returns once the API answers ``/api/health``; ``stop()`` shuts
everything down and leaves no thread behind. uvicorn runs in a background
thread (it installs no signal handlers there), so the caller decides how the
process ends: ``python -m server run`` waits for SIGINT/SIGTERM.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time

import httpx
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from core.faces import FaceEngine
from server.api import create_app
from server.config import ServerSettings
from server.db import make_engine, upgrade_database
from server.errors import StartupError
from server.ingest import Ingest
from server.retention import RetentionJob

log = logging.getLogger(__name__)


class ServerRuntime:
    def __init__(self, settings: ServerSettings, *, face_engine: FaceEngine | None = None) -> None:
        self.settings = settings
        self.face_engine = face_engine
        self.engine: Engine | None = None
        self.ingest: Ingest | None = None
        self.retention: RetentionJob | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        """Where this machine reaches the API (loopback when bound to every address)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.settings.http_host, self.settings.http_host)
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        return f"http://{host}:{self.settings.http_port}"

    def start(self, timeout: float = 30.0) -> "ServerRuntime":
        """Migrate the database, start MQTT ingest and the HTTP API; raise StartupError on failure.

        Does nothing if already started; after a failure everything begun is stopped again.
        """
        if self._thread is not None:
            return self
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        s = self.settings
        self.engine = make_engine(s.resolved_database_url)
        wait_for_database(self.engine, s.database_wait_s)
        try:
            upgrade_database(self.engine)
        except SQLAlchemyError as err:
            raise StartupError(f"cannot prepare the database: {err.__class__.__name__}: {err}") from err
        self._sock = sock = _listen_socket(s.http_host, s.http_port)
        if not _is_loopback(s.http_host):
            log.warning("the HTTP API listens on %s, reachable from the network (token required)", s.http_host)
        self.ingest = Ingest(s, self.engine)
        self.ingest.start()
        self.retention = RetentionJob(s, self.engine).start()
        app = create_app(s, ingest=self.ingest, engine=self.engine, face_engine=self.face_engine)
        # log_config=None: keep the host program's logging set-up; no websockets needed.
        config = uvicorn.Config(
            app, log_config=None, access_log=False, ws="none", lifespan="on", timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="waystation-http", daemon=True
        )
        self._thread.start()
        self._wait_healthy(timeout)
        log.info("server ready at %s (MQTT %s:%s)", self.url, s.mqtt_host, s.mqtt_port)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # trust_env=False: a proxy configured in the environment must not carry a loopback probe.
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._thread is None or not self._thread.is_alive():
                    raise StartupError(f"the HTTP server on {self.url} stopped during start-up (see the log)")
                try:
                    if client.get(self.url + "/api/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise StartupError(f"the HTTP API at {self.url} did not become healthy within {timeout:.0f} s")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving, disconnect from MQTT and close the database; idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the HTTP server thread did not stop within %.0f s", timeout)
            self._thread = None
        self._server = None
        if self._sock is not None:
            self._sock.close()  # uvicorn closed it already unless start-up failed before it ran
            self._sock = None
        if self.retention is not None:
            self.retention.stop()
            self.retention = None
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def __enter__(self) -> "ServerRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_database(engine: Engine, wait_s: float) -> None:
    """Retry with back-off while the database is not up yet (a server starting beside it); log once."""
    deadline = time.monotonic() + wait_s
    delay = 0.2
    logged = False
    while True:
        try:
            with engine.connect():
                return
        except SQLAlchemyError as err:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = engine.url.render_as_string(hide_password=True)
                raise StartupError(f"cannot reach the database {where}: {err.__class__.__name__}: {err}") from err
            if not logged:
                log.warning("database not reachable yet, retrying for up to %.0f s: %s", wait_s, err.__class__.__name__)
                logged = True
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


def _listen_socket(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, which calls sys.exit() on failure, so a taken port is a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = err.strerror or err
        raise StartupError(f"cannot listen on {host}:{port}: {reason} (is another server running?)") from err
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
