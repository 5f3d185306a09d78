"""Command line of the central server.

    python -m server run [--config FILE]        serve until SIGINT/SIGTERM
    python -m server migrate [--config FILE]    bring the database schema up to date
    python -m server check-config [--config FILE]

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


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the settings and exit (0 if valid, 2 if not)."""
    settings = _settings(config)
    s = settings
    typer.echo(f"config OK: API on {s.http_host}:{s.http_port}, MQTT broker {s.mqtt_host}:{s.mqtt_port}")


if __name__ == "__main__":
    sys.exit(app())
