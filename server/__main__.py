"""Command line of the central server.

    python -m server run [--config FILE]        serve until SIGINT/SIGTERM
    python -m server ingest [--config FILE]     one more MQTT ingest worker beside the server (shared subscription)
    python -m server migrate [--config FILE]    bring the database schema up to date
    python -m server check-config [--config FILE]
    python -m server provision STATION_ID --out DIR [--config FILE]   credentials + edge config of a station
    python -m server create-admin USERNAME [--password-file FILE]      the first (or another) admin of the web app

Exit codes: 0 done, 1 could not start (port taken, database unreachable),
2 invalid configuration (printed as ``ConfigError: <key>: <problem>``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Callable, Optional, Protocol, TypeVar

import typer

from server.config import ServerSettings
from server.errors import ConfigError, StartupError

class _Stoppable(Protocol):
    def stop(self) -> None: ...


Service = TypeVar("Service", bound=_Stoppable)

EXIT_STARTUP = 1
EXIT_CONFIG = 2

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML settings file; WAYSTATION_SERVER_* variables override it"),
]
LogLevel = Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")]


def _settings(config: Path | None) -> ServerSettings:
    try:
        return ServerSettings.load(config)
    except ConfigError as err:
        for line in err.lines():
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_CONFIG) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the start-up health probe is not news


def _serve(start: Callable[[], Service], banner: Callable[[Service], str]) -> None:
    """Start a service, print its banner, run until SIGINT or SIGTERM, stop it; exit 1/2 when it cannot start."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service = start()
    except ConfigError as err:
        for line in err.lines():
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except StartupError as err:
        typer.echo(f"StartupError: {err}", err=True)
        raise typer.Exit(EXIT_STARTUP) from None
    typer.echo(banner(service))
    try:
        stop.wait()
    finally:
        service.stop()
    typer.echo("stopped")


@app.command()
def run(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Serve the HTTP API and MQTT ingest until SIGINT or SIGTERM."""
    from server.runtime import ServerRuntime  # heavy imports only when serving

    settings = _settings(config)
    _logging(log_level)
    _serve(lambda: ServerRuntime(settings).start(),
           lambda runtime: f"Waystation server at {runtime.url} (Ctrl-C to stop)")


@app.command()
def ingest(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Run one more MQTT ingest worker beside the server (needs mqtt_shared_group) until SIGINT or SIGTERM."""
    from server.ingest_worker import IngestWorker

    settings = _settings(config)
    _logging(log_level)
    _serve(lambda: IngestWorker(settings).start(),
           lambda _: f"ingest worker {settings.mqtt_client_id} in group {settings.mqtt_shared_group} (Ctrl-C to stop)")


@app.command()
def migrate(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Create or upgrade the database schema to the newest revision."""
    from sqlalchemy.exc import SQLAlchemyError

    from server.db import upgrade_database

    settings = _settings(config)
    _logging(log_level)
    try:
        upgrade_database(settings.resolved_database_url)
    except SQLAlchemyError as err:
        typer.echo(f"StartupError: cannot migrate the database: {err.__class__.__name__}: {err}", err=True)
        raise typer.Exit(EXIT_STARTUP) from None
    typer.echo("database schema is up to date")


@app.command()
def provision(
    station_id: Annotated[str, typer.Argument(help="the new station's id (a-z, 0-9, '-', '_'); also its broker user")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for station.yaml, station.env and ca.crt")],
    name: Annotated[Optional[str], typer.Option(help="display name (default: the id)")] = None,
    broker_host: Annotated[Optional[str], typer.Option(help="broker host as the station reaches it")] = None,
    broker_port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="broker port for the station")] = None,
    data_dir: Annotated[str, typer.Option(help="the station's data folder, written into its config")] = "data/edge",
    rotate: Annotated[bool, typer.Option(help="the station exists: give it a new password")] = False,
    config: ConfigOption = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Register a station, add its broker credentials to mqtt_password_file, write its edge config into --out."""
    from server.provision import ProvisionError, provision_station

    settings = _settings(config)
    _logging(log_level)
    try:
        done = provision_station(
            settings=settings, station_id=station_id, out_dir=out, name=name, broker_host=broker_host,
            broker_port=broker_port, data_dir=data_dir, rotate=rotate,
        )
    except ProvisionError as err:
        typer.echo(f"ProvisionError: {err}", err=True)
        raise typer.Exit(EXIT_STARTUP) from None
    action = "registered" if done.registered else "given a new password"
    typer.echo(f"station {done.station_id} {action}; broker user {done.username} added to {done.password_file}")
    typer.echo(f"wrote {done.config_file}, {done.env_file}" + (f", {done.ca_file}" if done.ca_file else ""))
    typer.echo("reload the broker so it reads the new password: systemctl reload mosquitto")


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="sign-in name (letters, digits, _ . @ -)")],
    password_file: Annotated[
        Optional[Path], typer.Option(help="read the password from this file (else asked twice, hidden)")
    ] = None,
    display_name: Annotated[str, typer.Option(help="name shown in the app")] = "",
    language: Annotated[str, typer.Option(help="zh_CN or en")] = "zh_CN",
    config: ConfigOption = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Create an administrator of the web app. There are no default accounts: this is how the first one is made."""
    import re

    from sqlalchemy.exc import SQLAlchemyError

    from core.i18n import LANGUAGES
    from server import audit, users
    from server.db import make_engine, make_sessionmaker, upgrade_database
    from server.errors import Conflict
    from server.tables import Role

    settings = _settings(config)
    _logging(log_level)
    if not re.fullmatch(users.USERNAME_PATTERN, username):
        typer.echo("create-admin: the user name may use 2-64 letters, digits and _ . @ -", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if language not in LANGUAGES:
        typer.echo(f"create-admin: --language must be one of {', '.join(LANGUAGES)}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            typer.echo(f"create-admin: cannot read {password_file}: {err.strerror}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None
    elif sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade_database(engine)
        with make_sessionmaker(engine)() as session:
            user = users.create_user(
                session, username=username, password=password, role=Role.ADMIN,
                display_name=display_name, language=language,
            )
            audit.record(session, actor=audit.CLI, action="user.create", target=username, detail={"role": "admin"})
            session.commit()
            typer.echo(f"admin {user.username} created; sign in at http://{settings.http_host}:{settings.http_port}/login")
    except (users.WeakPassword, Conflict) as err:
        typer.echo(f"create-admin: {err}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except SQLAlchemyError as err:
        typer.echo(f"StartupError: cannot reach the database: {err.__class__.__name__}: {err}", err=True)
        raise typer.Exit(EXIT_STARTUP) from None
    finally:
        engine.dispose()


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the settings and exit (0 if valid, 2 if not)."""
    settings = _settings(config)
    s = settings
    typer.echo(f"config OK: API on {s.http_host}:{s.http_port}, MQTT broker {s.mqtt_host}:{s.mqtt_port}")


if __name__ == "__main__":
    sys.exit(app())
