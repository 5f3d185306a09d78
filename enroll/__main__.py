"""Command line for enrollment staff.

    ./run enroll add --name NAME [--phone PHONE] PHOTO [PHOTO ...]

The server's address and API token come from WAYSTATION_API_URL and
WAYSTATION_API_TOKEN (or --server / --token-file). Nothing is sent unless every
photo gives exactly one usable face.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import typer

from models.encoding import FaceEncoding

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)


@app.callback()
def _main() -> None:
    """Enrollment tools for staff."""


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise typer.BadParameter(f"cannot read {token_file}: {err.strerror}") from err
    token = os.environ.get("WAYSTATION_API_TOKEN", "").strip()
    if not token:
        typer.echo("enroll: no API token: set WAYSTATION_API_TOKEN or pass --token-file.", err=True)
        raise typer.Exit(2)
    return token


@app.command()
def add(
    photos: list[Path] = typer.Argument(..., help="1-16 photos of the worker, each showing only their face."),
    name: str = typer.Option(..., "--name", help="The worker's name as staff will see it."),
    phone: str | None = typer.Option(None, "--phone", help="Mobile number (unique per worker)."),
    server: str = typer.Option(os.environ.get("WAYSTATION_API_URL", "http://127.0.0.1:8080"), "--server", help="Server base URL."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the API token (else WAYSTATION_API_TOKEN)."),
) -> None:
    """Enroll one worker from photo files."""
    from core.faces import FaceEngine
    from enroll.capture import encode_photo

    token = _token(token_file)
    if len(photos) > 16:
        typer.echo("enroll: at most 16 photos per worker.", err=True)
        raise typer.Exit(2)
    engine = FaceEngine()
    samples = [encode_photo(engine, p) for p in photos]
    for s in samples:
        typer.echo(f"  {s.path.name}: " + (f"ok (face {s.face_px} px)" if s.ok else f"refused: {s.problem}"))
    if not all(s.ok for s in samples):
        typer.echo("enroll: nothing was saved; replace the refused photos and try again.", err=True)
        raise typer.Exit(1)
    body = {"name": name, "phone": phone, "encodings": [FaceEncoding.from_vector(s.vector).model_dump() for s in samples]}
    try:
        r = httpx.post(f"{server.rstrip('/')}/api/workers/encodings", json=body,
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as err:
        typer.echo(f"enroll: cannot reach the server at {server}: {err}", err=True)
        raise typer.Exit(1) from err
    if r.status_code != 201:
        detail = r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") else r.text
        typer.echo(f"enroll: the server refused the enrollment ({r.status_code}): {detail}", err=True)
        raise typer.Exit(1)
    out = r.json()
    typer.echo(f"enrolled {out['name']} as {out['worker_id']} (gallery version {out['version']}, {out['samples']} samples)")


if __name__ == "__main__":
    sys.exit(app())
