"""Command line of the edge agent.

``python -m edge run --config FILE``        run the station until SIGTERM or Ctrl-C (relay off on the way out)
``python -m edge check-config FILE``        validate a config file; exit 2 with ``ConfigError: key: value: problem``
``python -m edge selftest [--config FILE]``  installer's check: relay click, buzzer patterns, LEDs, live inputs
``python -m edge replay SOURCE --gallery DIR [--no-liveness]``  the door path on a recording, one JSON line per decision

Exit codes: 0 ok, 1 a runtime failure (camera, pins, database), 2 bad configuration.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Optional

import typer

from core.faces import FaceModelError
from edge.config import EdgeSettings
from edge.errors import ConfigError, EdgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Waystation edge agent.")

log = logging.getLogger("edge")

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def _load(path: Path) -> EdgeSettings:
    try:
        return EdgeSettings.load(path)
    except ConfigError as err:
        for line in err.lines():
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_CONFIG) from err


@app.command("check-config")
def check_config(config: Path = typer.Argument(..., help="YAML settings file")) -> None:
    """Validate a settings file (plus WAYSTATION_EDGE_* variables) without touching pins, camera or broker."""
    settings = _load(config)
    typer.echo(
        f"ok: station {settings.station_id}, camera {settings.camera.source!r}, "
        f"broker {settings.mqtt.host}:{settings.mqtt.port}, relay BCM {settings.door.relay_pin}"
    )


@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="YAML settings file"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="stop after this many frames"),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    """Run the station: camera, recognition, door and sync."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _load(config)

    from edge.agent import EdgeAgent  # heavy imports only once the config is known to be good

    # The frame loop runs on a worker thread; the main thread only waits for a signal and then
    # calls stop(). A signal handler that raised into the loop could interrupt a decision between
    # opening the door and recording the entry, so the handlers only set a flag.
    requested: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        requested.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = EdgeAgent(settings)
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            agent.run(max_frames=max_frames)
        except BaseException as err:  # reported by the main thread
            failure.append(err)

    try:
        agent.start()
        worker = threading.Thread(target=loop, name="frame-loop", daemon=True)
        worker.start()
        while worker.is_alive() and not requested:
            time.sleep(0.2)
        if requested:
            log.info("stopping (%s)", requested[0])
    except (EdgeError, FaceModelError) as err:
        typer.echo(f"{type(err).__name__}: {err}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from err
    finally:
        agent.stop()
    if failure:
        err = failure[0]
        log.error("the frame loop failed", exc_info=err)
        typer.echo(f"{type(err).__name__}: {err}", err=True)
        raise typer.Exit(EXIT_RUNTIME)


@app.command("selftest")
def selftest(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings file (default: the default pins)"),
    watch: float = typer.Option(15.0, "--watch", min=0.0, max=3600.0, help="seconds to show the inputs' live states"),
    pause: float = typer.Option(1.0, "--pause", min=0.0, max=30.0, help="seconds between the output steps"),
) -> None:
    """Click the relay, sound each buzzer pattern, light each LED, then show each input change live (agent stopped)."""
    from edge.config import DoorConfig
    from edge.selftest import run_selftest

    door = _load(config).door if config is not None else DoorConfig()
    try:
        run_selftest(door, say=typer.echo, watch_s=watch, pause_s=pause)
    except EdgeError as err:
        typer.echo(f"{type(err).__name__}: {err} (is the agent still running? stop it first)", err=True)
        raise typer.Exit(EXIT_RUNTIME) from err


@app.command("replay")
def replay(
    source: Path = typer.Argument(..., help="a video file, or a folder of images played in name order"),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="folder of <identity>/<photo> files, one face per photo"),
    no_liveness: bool = typer.Option(False, "--no-liveness", help="switch the liveness check off"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings file (default: the shipped settings)"),
    fps: float = typer.Option(5.0, "--fps", min=0.1, max=240.0, help="frame rate of an image folder (a video has its own)"),
) -> None:
    """The agent's door path on a recording: one JSON line per decision (identity, decision, reason, t_ms)."""
    import json

    from edge.replay import Replay, build_gallery, clip_fps

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = _load(config) if config is not None else EdgeSettings.build(station_id="replay")
    if no_liveness:
        settings = settings.model_copy(update={"liveness": settings.liveness.model_copy(update={"mode": "off"})})
    if not (source.is_file() or source.is_dir()):
        typer.echo(f"replay: {source} is neither a video file nor an image folder", err=True)
        raise typer.Exit(EXIT_CONFIG)
    from core.faces import FaceEngine

    try:
        engine = FaceEngine().load()
        built = build_gallery(engine, gallery)
    except FileNotFoundError as err:
        typer.echo(f"replay: {err}", err=True)
        raise typer.Exit(EXIT_CONFIG) from err
    except FaceModelError as err:
        typer.echo(f"{type(err).__name__}: {err}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from err
    for photo, why in built.refused:
        typer.echo(f"replay: gallery photo refused: {photo}: {why}", err=True)
    if len(built.gallery) == 0:
        typer.echo(f"replay: no usable photo in {gallery} (expected <identity>/<photo> files, one face each)", err=True)
        raise typer.Exit(EXIT_CONFIG)
    rate = clip_fps(source, fps)
    run = Replay(settings, engine, built.gallery)
    try:
        for decision in run.run(source, rate):
            typer.echo(json.dumps(decision.as_dict()))
    except EdgeError as err:
        typer.echo(f"{type(err).__name__}: {err}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from err
    typer.echo(
        f"replay: {run.frames} frames at {rate:g} fps, {len(built.gallery.identities)} people from "
        f"{built.photos - len(built.refused)} photo(s), liveness {settings.liveness.mode}, "
        f"{run.pipeline.encodings_computed} encodings",
        err=True,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
