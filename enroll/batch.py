"""Batch import: a folder of photos plus a CSV, one report row per CSV row.

``./run enroll import DIR --csv FILE --report OUT.csv``. The CSV (UTF-8 with or
without Excel's byte-order mark, or GB18030 as Chinese Excel saves it) needs
the columns ``name,phone,category,photo``; ``photo`` names one to five files in
DIR separated by ``;``. Optional: ``employer``, ``valid_until``,
``consent_version`` and ``allow_photo`` (yes/no; these two override
``--consent-version`` / ``--allow-photo`` for their row).

Each photo is uploaded to the server, which judges it and checks the face
against everyone enrolled (enroll/capture.py says why there and only there).
The report (UTF-8, columns exactly ``file,status,reason``, one row per CSV row
in order, ``file`` = the row's photo cell) says:

- ``enrolled``: saved now, or **already enrolled**: a worker with this phone
  number and this name exists (a re-run); nothing is sent, nothing changes,
  the reason names the worker.
- ``duplicate``: the face is already enrolled as another worker; nothing saved.
- ``rejected``: why (a bad field, a photo missing or unusable, a phone number
  that is someone else's); nothing saved.

A re-run therefore changes nothing that is enrolled and retries the rest. A
row's failure never stops the batch; the report is written row by row.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

import numpy as np

from core.i18n import Translator
from core.imaging import MAX_FILE_BYTES
from enroll.capture import (
    ApiError, Consent, DuplicateFace, EnrollmentApi, Sample, WorkerFields, normalise_phone, unknown_consent,
    valid_until,
)
from enroll.messages import CONSENT_TEXTS
from server.tables import WORKER_CATEGORIES

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("name", "phone", "category", "photo")
REPORT_COLUMNS = ("file", "status", "reason")
MAX_PHOTOS = 5
SAME_PERSON = 0.6
"""Two photos of one row farther apart than this (dlib's own same-person line) are not one person."""

_PHONE = re.compile(r"^\+?[0-9]{3,31}$")
_YES = {"yes", "y", "true", "1", "是", "同意"}
_NO = {"no", "n", "false", "0", "否", "不同意"}


class UsageError(Exception):
    """The CSV or an option cannot be used at all (exit code 2); the message says what to fix."""


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]

    def get(self, column: str) -> str:
        return (self.values.get(column) or "").strip()


@dataclass(frozen=True)
class Outcome:
    file: str
    status: str  # enrolled | duplicate | rejected
    reason: str


def read_rows(path: Path, t: Translator) -> list[Row]:
    """The CSV's data rows, header names lower-cased; UsageError when unreadable or a column is missing."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(t.gettext("cannot read the CSV file %(path)s: %(error)s", path=str(path),
                                   error=err.strerror or str(err))) from err
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise UsageError(t.gettext("cannot read the CSV file %(path)s: it is neither UTF-8 nor GB18030 text",
                                   path=str(path)))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
        if not any(header):
            raise UsageError(t.gettext("the CSV file %(path)s is empty", path=str(path)))
        reader.fieldnames = header
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise UsageError(t.ngettext(
                "the CSV file %(path)s has no column %(columns)s (it needs at least: %(required)s)",
                "the CSV file %(path)s has no columns %(columns)s (it needs at least: %(required)s)",
                len(missing), path=str(path), columns=", ".join(missing), required=",".join(REQUIRED_COLUMNS),
            ))
        rows = []
        for record in reader:
            values = {k: v for k, v in record.items() if isinstance(k, str) and isinstance(v, str)}
            if any(v.strip() for v in values.values()):  # blank lines are not rows
                rows.append(Row(reader.line_num, values))
        return rows
    except csv.Error as err:
        raise UsageError(t.gettext("cannot read the CSV file %(path)s: %(error)s", path=str(path),
                                   error=str(err))) from err


def _same_name(a: str, b: str) -> bool:
    def key(s: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", s).casefold().split())
    return key(a) == key(b)


class Importer:
    """Runs the import row by row against one server; ``known`` maps phone numbers to enrolled workers."""

    def __init__(
        self, api: EnrollmentApi, folder: Path, t: Translator, *,
        consent_version: str | None, allow_photo: bool, session_id: int | None,
    ) -> None:
        self.api = api
        self.folder = folder
        self.t = t
        self.consent_version = consent_version
        self.allow_photo = allow_photo
        self.session_id = session_id
        self.known: dict[str, tuple[str, str]] = {}

    def load_known(self) -> None:
        """Phone number -> (worker_id, name) of everyone enrolled (ApiError when the server is unusable)."""
        self.known = {
            normalise_phone(w["phone"]): (str(w["worker_id"]), str(w["name"]))
            for w in self.api.workers() if w.get("phone")
        }

    def run(
        self, rows: Iterable[Row], report: IO[str], progress: Callable[[Outcome], None] | None = None
    ) -> Counter[str]:
        """Every row in order, each written to ``report`` (CSV) as soon as it is done; counts per status."""
        writer = csv.writer(report, lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        report.flush()
        counts: Counter[str] = Counter()
        for row in rows:
            try:
                outcome = self.row(row)
            except Exception as err:  # noqa: BLE001  (one row's failure must never stop the batch)
                log.exception("row %d failed", row.line)
                error = type(err).__name__ + ": " + str(err)
                reason = self.t.gettext("unexpected error: %(error)s", error=error)
                outcome = Outcome(row.get("photo"), "rejected", reason)
            writer.writerow((outcome.file, outcome.status, outcome.reason))
            report.flush()
            counts[outcome.status] += 1
            if progress is not None:
                progress(outcome)
        return counts

    def row(self, row: Row) -> Outcome:
        t = self.t
        cell = row.get("photo")

        def rejected(reason: str) -> Outcome:
            return Outcome(cell, "rejected", reason)

        name, phone = row.get("name"), normalise_phone(row.get("phone"))
        if not name:
            return rejected(t.gettext("the name is empty"))
        if not phone:
            return rejected(t.gettext("the phone number is empty: it tells workers apart and makes a re-run safe"))
        if not _PHONE.match(phone):
            return rejected(t.gettext("phone number %(phone)s is not valid", phone=row.get("phone")))
        if phone in self.known:
            worker_id, known_name = self.known[phone]
            if _same_name(name, known_name):
                return Outcome(cell, "enrolled", t.gettext(
                    "already enrolled as %(worker_id)s (%(name)s); nothing changed",
                    worker_id=worker_id, name=known_name))
            return rejected(t.gettext("phone number %(phone)s already belongs to %(name)s (%(worker_id)s)",
                                      phone=row.get("phone"), name=known_name, worker_id=worker_id))
        category = re.sub(r"[\s\-]+", "_", row.get("category").lower())
        if category not in WORKER_CATEGORIES:
            return rejected(t.gettext("category %(value)s is not one of: %(choices)s",
                                      value=repr(row.get("category")), choices=", ".join(WORKER_CATEGORIES)))
        consent = self._consent(row)
        if isinstance(consent, str):
            return rejected(consent)
        try:
            until = valid_until(row.get("valid_until"))
        except ValueError:
            return rejected(t.gettext("valid_until %(value)s is not a date (YYYY-MM-DD)",
                                      value=repr(row.get("valid_until"))))
        files = [f.strip() for f in cell.split(";") if f.strip()]
        if not files:
            return rejected(t.gettext("no photo is named in the photo column"))
        if len(files) > MAX_PHOTOS:
            return rejected(t.gettext("at most %(max)s photos per worker; this row names %(count)s",
                                      max=MAX_PHOTOS, count=len(files)))
        samples, problems = [], []
        for file in files:
            sample, problem = self._sample(file)
            if problem:
                problems.append(problem)
            elif sample is not None:
                samples.append(sample)
        if problems:
            return rejected("; ".join(problems))
        dup = next((s.duplicate for s in samples if s.duplicate is not None), None)
        if dup is not None:
            return Outcome(cell, "duplicate", self._dup_reason(dup.name, dup.worker_id))
        if not _one_person(samples):
            return rejected(t.gettext("the photos show different people"))
        fields = WorkerFields(
            name=name, phone=phone, category=category, employer=row.get("employer") or None,
            valid_until=until, session_id=self.session_id,
        )
        try:
            saved = self.api.enroll(fields, consent, samples)
        except DuplicateFace as err:
            return Outcome(cell, "duplicate", self._dup_reason(err.duplicate.name, err.duplicate.worker_id))
        except ApiError as err:
            return rejected(err.message)
        self.known[phone] = (str(saved["worker_id"]), str(saved.get("name", name)))
        return Outcome(cell, "enrolled", t.ngettext(
            "enrolled as %(worker_id)s (%(num)s photo)", "enrolled as %(worker_id)s (%(num)s photos)",
            len(samples), worker_id=saved["worker_id"]))

    def _dup_reason(self, name: str, worker_id: str) -> str:
        return self.t.gettext("already enrolled as %(name)s (%(worker_id)s); nothing was saved",
                              name=name, worker_id=worker_id)

    def _consent(self, row: Row) -> Consent | str:
        version = row.get("consent_version") or self.consent_version
        if not version:
            return self.t.gettext("no consent recorded: give --consent-version or fill the consent_version column")
        if version not in CONSENT_TEXTS:
            return unknown_consent(version, self.t)
        flag = row.get("allow_photo").lower()
        if not flag:
            return Consent(version, self.allow_photo)
        if flag in _YES or flag in _NO:
            return Consent(version, flag in _YES)
        return self.t.gettext("allow_photo must be yes or no, not %(value)s", value=repr(row.get("allow_photo")))

    def _sample(self, file: str) -> tuple[Sample | None, str | None]:
        t, folder = self.t, str(self.folder)
        path = (self.folder / file).resolve()
        if Path(file).is_absolute() or not path.is_relative_to(self.folder.resolve()):
            return None, t.gettext("%(file)s: the photo must be a file inside %(folder)s", file=file, folder=folder)
        if not path.is_file():
            return None, t.gettext("%(file)s: not found in %(folder)s", file=file, folder=folder)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return None, t.gettext("%(file)s: larger than %(mb)s MB", file=file, mb=MAX_FILE_BYTES // 2**20)
            data = path.read_bytes()
        except OSError as err:
            return None, t.gettext("%(file)s: cannot be read (%(error)s)", file=file, error=err.strerror or str(err))
        try:
            sample = self.api.sample(data, path.name)
        except ApiError as err:
            return None, t.gettext("%(file)s: %(problem)s", file=file, problem=err.message)
        if not sample.ok:
            problem = "; ".join(sample.problems) or t.gettext("the server could not use this photo")
            return None, t.gettext("%(file)s: %(problem)s", file=file, problem=problem)
        return sample, None


def _one_person(samples: list[Sample]) -> bool:
    if len(samples) < 2:
        return True
    vectors = np.stack([s.vector() for s in samples])
    return bool(np.linalg.norm(vectors - vectors[0], axis=1).max() <= SAME_PERSON)
