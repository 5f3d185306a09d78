"""Command line for enrollment staff (./run enroll ...).

    consent [--version V]      the consent text the worker reads first, and its version
    add PHOTO... --name N --phone P --category C --consent-version V [--allow-photo]
    camera [--device N | --video FILE] --name N ... --consent-version V [--yes]
    import DIR --csv FILE --report OUT.csv [--consent-version V] [--session ID]

The server's address and API token come from WAYSTATION_API_URL and
WAYSTATION_API_TOKEN (or --server / --token-file). Messages are in Simplified
Chinese or English (--lang; default from LANG: zh* is Chinese). Nothing is
saved without the worker's consent (--consent-version: the version of the
consent text they signed), and nothing unless every photo is usable.
Exit codes: 0 done; 1 refused or failed (import: some row not enrolled,
or the server could not be used); 2 wrong usage (an option, a missing CSV
column, an unreadable CSV, no consent, an unknown session).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer

from core.i18n import Translator, translator
from enroll.capture import (
    ApiError, Consent, DuplicateFace, EnrollmentApi, Sample, WorkerFields, normalise_phone, unknown_consent,
    valid_until,
)
from enroll.messages import CONSENT_PHOTO, CONSENT_TEXT_VERSION, CONSENT_TEXTS

HELP = (
    "Enrollment tools for staff: consent (the text the worker reads first), add (photo files), camera (live "
    "capture) and import (a folder of photos and a CSV). Server and token: WAYSTATION_API_URL and "
    "WAYSTATION_API_TOKEN, or --server and --token-file. Exit codes: 0 done, 1 refused or failed, 2 wrong usage."
)
app = typer.Typer(add_completion=False, help=HELP, no_args_is_help=True)

SERVER = typer.Option(
    os.environ.get("WAYSTATION_API_URL", "http://127.0.0.1:8080"), "--server", help="Server base URL."
)
TOKEN_FILE = typer.Option(None, "--token-file", help="File holding the API token (else WAYSTATION_API_TOKEN).")
LANG = typer.Option(None, "--lang", help="zh_CN or en (default from LANG).")
NAME = typer.Option(..., "--name", help="The worker's name as staff will see it.")
PHONE = typer.Option(None, "--phone", help="Mobile number (unique per worker).")
CATEGORY = typer.Option(
    None, "--category", help="courier, food_delivery, sanitation, designated_driver or other."
)
EMPLOYER = typer.Option(None, "--employer", help="Employer or platform.")
VALID_UNTIL = typer.Option(None, "--valid-until", help="Last day of access (YYYY-MM-DD, China time).")
SESSION = typer.Option(None, "--session", help="Enrollment session id.")
CONSENT = typer.Option(None, "--consent-version", help="Version of the consent text the worker signed (required).")
ALLOW_PHOTO = typer.Option(False, "--allow-photo", help="The worker agreed that a thumbnail photo is kept.")
ALLOW_DUP = typer.Option(False, "--allow-duplicate", help="Save even if the face is already enrolled.")


@app.callback()
def _main() -> None:
    """Enrollment tools for staff."""


def language(lang: str | None) -> Translator:
    """--lang, else LANG (zh* -> Simplified Chinese, anything else -> English)."""
    if lang is None:
        lang = "zh_CN" if os.environ.get("LANG", "").lower().startswith("zh") else "en"
    if lang not in ("zh_CN", "en"):
        typer.echo(f"enroll: --lang must be zh_CN or en, not {lang!r}", err=True)
        raise typer.Exit(2)
    return translator(lang)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"enroll: {message}", err=True)
    raise typer.Exit(code)


def _token(token_file: Path | None, t: Translator) -> str:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            fail(t.gettext("cannot read %(path)s: %(error)s", path=str(token_file), error=err.strerror or str(err)), 2)
    token = os.environ.get("WAYSTATION_API_TOKEN", "").strip()
    if not token:
        fail(t.gettext("no API token: set WAYSTATION_API_TOKEN or pass --token-file."), 2)
    return token


def _consent(version: str | None, allow_photo: bool, t: Translator) -> Consent:
    if not version or not version.strip():
        fail(t.gettext("the worker's consent is required before any face data is stored: have them read and sign "
                       "the consent text (./run enroll consent prints it), then pass --consent-version %(current)s "
                       "(and --allow-photo if they also agreed that a photo is kept).",
                       current=CONSENT_TEXT_VERSION), 2)
    if version.strip() not in CONSENT_TEXTS:
        fail(unknown_consent(version, t), 2)
    return Consent(version.strip(), allow_photo)


def _fields(name: str, phone: str | None, category: str | None, employer: str | None, until: str | None,
            session: int | None, t: Translator) -> WorkerFields:
    try:
        valid = valid_until(until)
    except ValueError:
        fail(t.gettext("--valid-until %(value)s is not a date (YYYY-MM-DD).", value=repr(until)), 2)
    return WorkerFields(name=name, phone=normalise_phone(phone) if phone else None, category=category,
                        employer=employer, valid_until=valid, session_id=session)


def _save(api: EnrollmentApi, fields: WorkerFields, consent: Consent, samples: list[Sample], allow_duplicate: bool,
          t: Translator) -> dict:
    try:
        return api.enroll(fields, consent, samples, allow_duplicate=allow_duplicate)
    except DuplicateFace as err:
        fail(t.gettext("nothing was saved: this face is already enrolled as %(name)s (%(worker_id)s); pass "
                       "--allow-duplicate if this really is another person.",
                       name=err.duplicate.name, worker_id=err.duplicate.worker_id))
    except ApiError as err:
        if err.status is None:
            fail(err.message)
        fail(t.gettext("the server refused the enrollment (%(status)s): %(detail)s", status=err.status,
                       detail=err.message))


def _saved(out: dict, t: Translator) -> None:
    typer.echo(t.gettext("enrolled %(name)s as %(worker_id)s (gallery version %(version)s, %(samples)s samples)",
                         name=out["name"], worker_id=out["worker_id"], version=out["version"], samples=out["samples"]))


@app.command()
def consent(
    version: str = typer.Option(CONSENT_TEXT_VERSION, "--version", help="Consent text version to print."),
    lang: str | None = LANG,
) -> None:
    """Print the consent text for the worker to read, and its version (for --consent-version)."""
    t = language(lang)
    if version not in CONSENT_TEXTS:
        fail(unknown_consent(version, t), 2)
    typer.echo(t.gettext("Consent text, version %(version)s:", version=version))
    typer.echo("\n" + t.gettext(CONSENT_TEXTS[version]) + "\n")
    typer.echo(t.gettext("Optional, only if the worker agrees (--allow-photo):"))
    typer.echo("\n" + t.gettext(CONSENT_PHOTO))


@app.command()
def add(
    photos: list[Path] = typer.Argument(..., help="1-5 photos of the worker, each showing only their face."),
    name: str = NAME, phone: str | None = PHONE, category: str | None = CATEGORY, employer: str | None = EMPLOYER,
    valid_until: str | None = VALID_UNTIL, session: int | None = SESSION, consent_version: str | None = CONSENT,
    allow_photo: bool = ALLOW_PHOTO, allow_duplicate: bool = ALLOW_DUP,
    server: str = SERVER, token_file: Path | None = TOKEN_FILE, lang: str | None = LANG,
) -> None:
    """Enroll one worker from photo files."""
    t = language(lang)
    consent = _consent(consent_version, allow_photo, t)
    token = _token(token_file, t)
    if len(photos) > 5:
        fail(t.gettext("at most 5 photos per worker."), 2)
    fields = _fields(name, phone, category, employer, valid_until, session, t)
    with EnrollmentApi(server, token, t) as api:
        samples = []
        for path in photos:
            try:
                data = path.read_bytes()
                sample = api.sample(data, path.name)
            except OSError as err:
                sample = Sample(path.name, False, problems=(t.gettext("cannot read the file: %(error)s",
                                                                     error=err.strerror or str(err)),))
            except ApiError as err:
                fail(err.message if err.status is None else f"{err.status}: {err.message}")
            samples.append(sample)
            if sample.ok:
                typer.echo("  " + t.gettext("%(file)s: ok (face %(px)s px)", file=path.name, px=sample.face_px))
            else:
                typer.echo("  " + t.gettext("%(file)s: refused: %(problem)s", file=path.name,
                                            problem="; ".join(sample.problems)))
        if not all(s.ok for s in samples):
            fail(t.gettext("nothing was saved; replace the refused photos and try again."))
        dup = next((s.duplicate for s in samples if s.duplicate), None)
        if dup is not None and not allow_duplicate:
            fail(t.gettext("nothing was saved: this face is already enrolled as %(name)s (%(worker_id)s); pass "
                           "--allow-duplicate if this really is another person.", name=dup.name,
                           worker_id=dup.worker_id))
        _saved(_save(api, fields, consent, samples, allow_duplicate, t), t)


@app.command()
def camera(
    device: int | None = typer.Option(None, "--device", help="Camera number (0 = the first camera)."),
    video: Path | None = typer.Option(None, "--video", help="A video file played as the camera."),
    name: str = NAME, phone: str | None = PHONE, category: str | None = CATEGORY, employer: str | None = EMPLOYER,
    valid_until: str | None = VALID_UNTIL, session: int | None = SESSION, consent_version: str | None = CONSENT,
    allow_photo: bool = ALLOW_PHOTO, allow_duplicate: bool = ALLOW_DUP,
    samples: int = typer.Option(3, "--samples", min=3, max=5, help="Samples to take (3-5)."),
    timeout: float = typer.Option(60.0, "--timeout", min=5.0, max=600.0, help="Give up after this many seconds."),
    yes: bool = typer.Option(False, "--yes", help="Save without asking (a duplicate still needs --allow-duplicate)."),
    server: str = SERVER, token_file: Path | None = TOKEN_FILE, lang: str | None = LANG,
) -> None:
    """Enroll one worker in front of a camera: live quality feedback, 3-5 samples taken automatically."""
    from enroll.camera import CameraError, collect, open_frames
    from core.faces import FaceEngine

    t = language(lang)
    if (device is None) == (video is None):
        fail(t.gettext("give either --device N or --video FILE."), 2)
    consent = _consent(consent_version, allow_photo, t)
    token = _token(token_file, t)
    fields = _fields(name, phone, category, employer, valid_until, session, t)
    with EnrollmentApi(server, token, t) as api:
        try:
            _check_session(api, session, t)
            # The camera is opened first (a wrong device fails at once), the models loaded before its clock starts.
            frames = open_frames(device if device is not None else Path(video), t)  # type: ignore[arg-type]
            engine = FaceEngine().load()
            got = collect(frames, engine, api, t, count=samples, timeout_s=timeout)
        except CameraError as err:
            fail(str(err))
        except ApiError as err:
            fail(err.message if err.status is None else f"{err.status}: {err.message}")
        if len(got.samples) < samples:
            fail(t.gettext("only %(have)s of %(want)s good samples in %(seconds).0f s; nothing was saved. Check the "
                           "light and the distance, and try again.", have=len(got.samples), want=samples,
                           seconds=got.elapsed_s))
        typer.echo(t.gettext("%(num)s samples taken in %(seconds).1f s (faces %(sizes)s px).", num=len(got.samples),
                             seconds=got.elapsed_s, sizes=", ".join(str(s.face_px) for s in got.samples)))
        dup = next((s.duplicate for s in got.samples if s.duplicate), None)
        if dup is not None:
            typer.echo(t.gettext("Warning: this face is already enrolled as %(name)s (%(worker_id)s).",
                                 name=dup.name, worker_id=dup.worker_id))
            if not allow_duplicate and (yes or not typer.confirm(t.gettext("Enroll anyway as a new worker?"))):
                fail(t.gettext("nothing was saved."))
            allow_duplicate = True
        if not yes and not typer.confirm(t.gettext("Save %(name)s with these samples?", name=name)):
            fail(t.gettext("nothing was saved."))
        _saved(_save(api, fields, consent, got.samples, allow_duplicate, t), t)


@app.command("import")
def import_(
    folder: Path = typer.Argument(..., help="Folder holding the photos the CSV names."),
    csv_file: Path = typer.Option(..., "--csv", help="CSV with at least the columns name,phone,category,photo."),
    report: Path = typer.Option(..., "--report", help="Report to write (columns file,status,reason)."),
    consent_version: str | None = CONSENT, allow_photo: bool = ALLOW_PHOTO, session: int | None = SESSION,
    server: str = SERVER, token_file: Path | None = TOKEN_FILE, lang: str | None = LANG,
) -> None:
    """Enroll many workers from a folder of photos and a CSV; writes a report row per CSV row (enroll/batch.py)."""
    from tqdm import tqdm

    from enroll.batch import Importer, UsageError, read_rows

    t = language(lang)
    try:
        if not folder.is_dir():
            raise UsageError(t.gettext("the photo folder %(path)s does not exist", path=str(folder)))
        if consent_version and consent_version not in CONSENT_TEXTS:
            raise UsageError(unknown_consent(consent_version, t))
        rows = read_rows(csv_file, t)
        if not consent_version and not any(r.get("consent_version") for r in rows):
            raise UsageError(t.gettext(
                "the workers' consent is required before any face data is stored: pass --consent-version with the "
                "version of the consent text they signed, or fill a consent_version column in the CSV"))
    except UsageError as err:
        fail(str(err), 2)
    token = _token(token_file, t)
    with EnrollmentApi(server, token, t) as api:
        importer = Importer(api, folder, t, consent_version=consent_version, allow_photo=allow_photo,
                            session_id=session)
        try:
            _check_session(api, session, t)
            importer.load_known()
        except ApiError as err:
            fail(err.message if err.status is None else f"{err.status}: {err.message}")
        try:
            out = report.open("w", encoding="utf-8", newline="")
        except OSError as err:
            fail(t.gettext("cannot write the report %(path)s: %(error)s", path=str(report),
                           error=err.strerror or str(err)), 2)
        with out, tqdm(total=len(rows), file=sys.stderr, unit=t.gettext("row"), desc=t.gettext("import"),
                       dynamic_ncols=True) as bar:
            counts = importer.run(rows, out, progress=lambda _o: bar.update(1))
    typer.echo(t.gettext("%(rows)s rows: %(enrolled)s enrolled, %(duplicate)s duplicate, %(rejected)s rejected; "
                         "report: %(path)s", rows=len(rows), enrolled=counts["enrolled"],
                         duplicate=counts["duplicate"], rejected=counts["rejected"], path=str(report)))
    raise typer.Exit(0 if counts["enrolled"] == len(rows) else 1)


def _check_session(api: EnrollmentApi, session_id: int | None, t: Translator) -> None:
    """Refuse an unknown --session before any photo is sent (the server would refuse every save)."""
    if session_id is not None and all(s.get("session_id") != session_id for s in api.sessions()):
        fail(t.gettext("there is no enrollment session %(session_id)s: ask an administrator for its number.",
                       session_id=session_id), 2)


if __name__ == "__main__":
    sys.exit(app())
