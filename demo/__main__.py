"""`./run demo [--once]`: enroll people through the server, play visits at a
station's camera, and read the entries back from the server's API."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import typer

from demo.scenario import ENROLL, VISITS, PacedScenario

REPO = Path(__file__).resolve().parents[1]
STATION_ID = "demo-door-1"

app = typer.Typer(add_completion=False, help=__doc__)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@app.command()
def main(
    once: bool = typer.Option(False, "--once", help="Exit right after the summary line instead of serving until Ctrl-C."),
    faces_dir: Path = typer.Option(
        Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces")),
        "--faces-dir", help="The sample face data (its MANIFEST.md must be there).",
    ),
    data_dir: Path = typer.Option(REPO / "data" / "demo", "--data-dir", help="Where the demo keeps its databases; wiped at start."),
    http_port: int = typer.Option(8080, "--http-port", min=1, max=65535, help="HTTP port on 127.0.0.1 (a free one if taken)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the components' log lines."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (faces_dir / "MANIFEST.md").is_file():
        typer.echo(f"demo: the sample face data was not found at {faces_dir}; set WAYSTATION_FACES_DIR.", err=True)
        raise typer.Exit(1)

    from core.broker import EmbeddedBroker
    from edge.agent import EdgeAgent
    from edge.config import EdgeSettings
    from gpiozero.pins.mock import MockFactory
    from server.config import ServerSettings
    from server.runtime import ServerRuntime

    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    typer.echo("Waystation demo: one server, one station, everything on 127.0.0.1")
    broker = EmbeddedBroker().start()
    typer.echo(f"  MQTT broker (embedded amqtt)   mqtt://{broker.host}:{broker.port}")
    token = secrets.token_urlsafe(24)
    server = ServerRuntime(
        ServerSettings(
            data_dir=data_dir / "server",
            http_host="127.0.0.1",
            http_port=http_port if _port_free(http_port) else _free_port(),
            api_token=token,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
        )
    )
    agent = None
    try:
        server.start()
        typer.echo(f"  server API                     {server.url}/api  (token in the Authorization header)")
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        api.post("/api/stations", json={"station_id": STATION_ID, "name": "Demo station, Gongshu district"}).raise_for_status()
        # What a provisioning bundle's station.yaml carries: the key QR credentials are checked with, so the
        # station takes the server's default mode (face or QR) instead of refusing it.
        qr_key = api.get("/api/credentials/public-key").raise_for_status().json()["public_key"]

        typer.echo(f"\nEnrolling {len(ENROLL)} workers through the server (photo -> one face -> encoding):")
        names: dict[str, str] = {}
        for person in ENROLL:
            path = faces_dir / person.photo
            try:
                photo = path.read_bytes()
            except OSError as err:
                typer.echo(f"  {person.name:<22} skipped: cannot read {path} ({err.strerror})")
                continue
            r = api.post("/api/workers", data={"name": person.name}, files={"photos": (path.name, photo)})
            if r.status_code != 201:
                typer.echo(f"  {person.name:<22} refused: {r.json().get('detail')}")
                continue
            body = r.json()
            names[body["worker_id"]] = person.name
            typer.echo(f"  {person.name:<22} enrolled, gallery version {body['version']}")

        scenario = PacedScenario(faces_dir)
        seen = [False] * len(scenario.visits)

        tally = {"granted": 0, "denied": 0}

        def on_verdict(verdict, latency_ms):  # noqa: ANN001  (runs in the agent's frame loop)
            # Attribute by the visit's first frame time: the frame reader may
            # already be a frame or two ahead of the frame that decided.
            idx = scenario.visit_at(verdict.visit_started_at + 1e-3)
            visit = scenario.visits[idx] if idx is not None else None
            who = names.get(verdict.identity) if verdict.identity else None
            decision = verdict.decision.value
            if verdict.record and decision in tally:
                tally[decision] += 1
            if idx is not None:
                seen[idx] = True
            timing = f"{latency_ms:6.0f} ms" if latency_ms is not None else "   door shut"
            expected = visit is not None and (decision == "granted") == (who is not None and who == visit.enrolled_as)
            note = "" if expected else "  <- unexpected"
            if not verdict.record:
                note += "  (not a new entry)"
            typer.echo(f"  {visit.who if visit else '?':<28}{who or 'nobody':<22}{decision:<10}{timing}{note}")

        settings = EdgeSettings(
            station_id=STATION_ID,
            data_dir=data_dir / "edge",
            mqtt={"host": broker.host, "port": broker.port},
            camera={"source": str(faces_dir), "realtime": True},
            policy={"visit_gap_s": 0.8, "unknown_log_interval_s": 1.0},
            access={"qr_public_keys": [qr_key]},
            # The demo's visitors are still photos, which the liveness check rightly rejects as
            # spoofs (no blink, no head movement); it is switched off here so the demo shows
            # recognition. `./run edge replay` on a real clip shows the door with liveness on.
            liveness={"mode": "off"},
        )
        agent = EdgeAgent(settings, frames=scenario, pin_factory=MockFactory(), on_verdict=on_verdict)
        agent.start()
        if not agent.wait_for_gallery(min_size=len(names), timeout=30):
            typer.echo("demo: the station did not receive the enrollments over MQTT within 30 s", err=True)
            raise typer.Exit(1)
        typer.echo(f"\nStation {STATION_ID} holds {len(names)} workers. Visitors walk up to the camera:")
        typer.echo(f"  {'visitor':<28}{'recognised as':<22}{'decision':<10}first frame -> relay")
        agent.run()

        for visit, was_seen in zip(scenario.visits, seen):
            if not was_seen:
                typer.echo(f"  {visit.who:<28}{'-':<22}{'none':<10}(no usable face seen)")
        granted, denied = tally["granted"], tally["denied"]
        entries = _wait_for_entries(api, granted + denied, timeout=20)
        typer.echo(f"demo: {granted} granted, {denied} denied, {entries} entries recorded on the server")
        if not once:
            password = _demo_admin(server)
            typer.echo(f"\nAdmin web app: {server.url}/login  user 'demo', password {password} (made for this run only)")
            typer.echo(f"API: {server.url}/api/entries with header 'Authorization: Bearer {token}'. Ctrl-C to stop.")
            stop.wait()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        broker.stop()


def _demo_admin(server: ServerRuntime) -> str:
    """A one-run admin with a random password: the repository holds no default credentials."""
    from server import users
    from server.db import make_sessionmaker
    from server.tables import Role

    password = secrets.token_urlsafe(12)
    assert server.engine is not None
    with make_sessionmaker(server.engine)() as session:
        users.create_user(session, username="demo", password=password, role=Role.ADMIN, display_name="Demo admin")
        session.commit()
    return password


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count_entries(api: httpx.Client) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        body = api.get("/api/entries", params=params).raise_for_status().json()
        total += len(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return total


def _wait_for_entries(api: httpx.Client, expected: int, timeout: float) -> int:
    """Entries reach the server asynchronously (outbox -> MQTT -> ingest)."""
    deadline = time.monotonic() + timeout
    count = _count_entries(api)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = _count_entries(api)
    return count


if __name__ == "__main__":
    sys.exit(app())
