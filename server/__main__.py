"""Command line of the central server.

    python -m server run [--config FILE]        serve until SIGINT/SIGTERM
    python -m server migrate [--config FILE]    bring the database schema up to date
    python -m server check-config [--config FILE]
    python -m server provision STATION_ID --out DIR [--config FILE]   credentials + edge config of a station

Exit codes: 0 done, 1 could not start (port taken, database unreachable),
2 invalid configuration (printed as ``ConfigError: <key>: <problem>``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from server.config import ServerSettings
from server.errors import ConfigError, StartupError

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


@app.command()
def run(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Serve the HTTP API and MQTT ingest until SIGINT or SIGTERM."""
    from server.runtime import ServerRuntime  # heavy imports only when serving

    settings = _settings(config)
    _logging(log_level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime = ServerRuntime(settings)
    try:
        runtime.start()
    except StartupError as err:
        typer.echo(f"StartupError: {err}", err=True)
        raise typer.Exit(EXIT_STARTUP) from None
    typer.echo(f"Waystation server at {runtime.url} (Ctrl-C to stop)")
    try:
        stop.wait()
    finally:
        runtime.stop()
    typer.echo("stopped")


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


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the settings and exit (0 if valid, 2 if not)."""
    settings = _settings(config)
    s = settings
    typer.echo(f"config OK: API on {s.http_host}:{s.http_port}, MQTT broker {s.mqtt_host}:{s.mqtt_port}")


if __name__ == "__main__":
    sys.exit(app())
