"""The enrollment API as the staff tools use it: photos and camera frames become samples on the server.

Every photo or chosen camera frame is uploaded to ``POST /api/enrollment/samples``:
the server checks its quality (core.quality), makes its template
(core.templates) and thumbnail, and says whether the face is already enrolled.
The worker is then saved by ``POST /api/enrollment/workers`` with the samples'
encodings, and the server checks for a duplicate face again, in the same
transaction, before anything is stored. So the server is the one place that
judges photos and duplicates: ``./run enroll``, the batch import and the web
page give the same verdict on the same photo, and a duplicate can never slip
in between two tools' checks.

Errors: :class:`ApiError` (the server refused, with its sentence, or could not
be reached); :class:`DuplicateFace` (409 with ``duplicate_of``) is a subclass.
A photo the server cannot use is *not* an error: it is a :class:`Sample` with
``ok`` False and its problems.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from typing import Any

import httpx

from core.i18n import DEFAULT_TIME_ZONE, Translator, zone
from models.encoding import FaceEncoding

__all__ = [
    "ApiError", "Consent", "Duplicate", "DuplicateFace", "EnrollmentApi", "Sample", "WorkerFields", "normalise_phone",
    "unknown_consent", "valid_until",
]

RETRIES = 3
"""Attempts for a request that did not reach the server (a Wi-Fi hiccup at an enrollment session)."""


@dataclass(frozen=True)
class Duplicate:
    """An enrolled worker whose face matches."""

    worker_id: str
    name: str


@dataclass(frozen=True)
class Sample:
    """The server's verdict on one photo or frame; ``problems`` are sentences in the caller's language."""

    label: str
    ok: bool
    problems: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    face_px: int = 0
    encoding: dict[str, Any] | None = None
    thumbnail_b64: str | None = None
    duplicate: Duplicate | None = None

    def vector(self):  # noqa: ANN201  (numpy array; numpy is not imported here for the CLI's start-up time)
        return FaceEncoding.model_validate(self.encoding).vector()


@dataclass(frozen=True)
class Consent:
    """The worker's separate consent: which text they agreed to, and whether a thumbnail may be kept."""

    text_version: str
    allows_photo: bool = False


@dataclass(frozen=True)
class WorkerFields:
    name: str
    phone: str | None = None
    category: str | None = None
    employer: str | None = None
    valid_until: str | None = None
    session_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    """The server refused a request (``status``) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class DuplicateFace(ApiError):
    """The face is already enrolled (409 with ``duplicate_of``); nothing was saved."""

    def __init__(self, message: str, duplicate: Duplicate) -> None:
        super().__init__(message, 409)
        self.duplicate = duplicate


class EnrollmentApi:
    """A small client of the enrollment routes; server messages come back in the translator's language."""

    def __init__(
        self, server: str, token: str, t: Translator, *, timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.t = t
        lang = "zh-CN, zh;q=0.9" if t.language.startswith("zh") else "en"
        self._http = httpx.Client(
            base_url=self.server, timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {token}", "Accept-Language": lang},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "EnrollmentApi":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------
    def sample(self, data: bytes, label: str) -> Sample:
        """Upload one photo; a photo the server cannot use comes back as a Sample with ``ok`` False."""
        r = self._request("POST", "/api/enrollment/samples", files={"photo": (label, data, _mime(label))})
        if r.status_code in (400, 413, 415, 422):  # this photo cannot be used (422: the verdict, with problems)
            body = _payload(r)
            if not isinstance(body, dict) or not body.get("problems"):
                return Sample(label, False, problems=(_detail(r),))
        else:
            body = self._json(r)
        problems = body.get("problems") or []
        dup = body.get("duplicate") or None
        return Sample(
            label=label,
            ok=bool(body.get("ok")) and body.get("encoding") is not None,
            problems=tuple(str(p.get("message") or p.get("code")) for p in problems),
            codes=tuple(str(p.get("code")) for p in problems),
            face_px=int(body.get("face_px") or 0),
            encoding=body.get("encoding"),
            thumbnail_b64=body.get("thumbnail_b64"),
            duplicate=Duplicate(str(dup["worker_id"]), str(dup.get("name", ""))) if isinstance(dup, dict) else None,
        )

    def enroll(
        self, fields: WorkerFields, consent: Consent, samples: list[Sample], *, allow_duplicate: bool = False
    ) -> dict[str, Any]:
        """Save the worker: 201's body (worker_id, name, version, samples), else DuplicateFace / ApiError."""
        body: dict[str, Any] = {
            "name": fields.name,
            "phone": fields.phone,
            "category": fields.category,
            "employer": fields.employer,
            "valid_until": fields.valid_until,
            "session_id": fields.session_id,
            "consent": {"text_version": consent.text_version, "allows_photo": consent.allows_photo},
            "encodings": [s.encoding for s in samples],
            "allow_duplicate": allow_duplicate,
            **fields.extra,
        }
        thumbnail = next((s.thumbnail_b64 for s in samples if s.thumbnail_b64), None)
        if consent.allows_photo and thumbnail:
            body["thumbnail_b64"] = thumbnail
        body = {k: v for k, v in body.items() if v is not None}
        r = self._request("POST", "/api/enrollment/workers", json=body)
        if r.status_code == 201:
            return self._json(r)
        if r.status_code == 409:
            payload = _payload(r)
            dup = payload.get("duplicate_of") if isinstance(payload, dict) else None
            if isinstance(dup, dict):
                raise DuplicateFace(_detail(r), Duplicate(str(dup.get("worker_id")), str(dup.get("name", ""))))
        raise ApiError(_detail(r), r.status_code)

    def sessions(self) -> list[dict[str, Any]]:
        """The newest enrollment sessions (session_id, place, starts_at, ends_at, staff, ...)."""
        return list(self._json(self._request("GET", "/api/enrollment/sessions"))["items"])

    def workers(self) -> list[dict[str, Any]]:
        """Every enrolled worker (worker_id, name, phone, ...)."""
        body = self._json(self._request("GET", "/api/workers"))
        return list(body["items"] if isinstance(body, dict) else body)

    # -- plumbing --------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send; retried while the server cannot be reached. Saving a worker is retried only when the request
        never left (a lost answer to a save that happened would come back as "already enrolled")."""
        delay = 1.0
        saves = path == "/api/enrollment/workers"
        for attempt in range(1, RETRIES + 1):
            try:
                return self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                unsent = isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt == RETRIES or (saves and not unsent):
                    raise ApiError(
                        self.t.gettext("cannot reach the server at %(url)s: %(error)s", url=self.server, error=str(err))
                    ) from err
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _json(self, r: httpx.Response) -> dict[str, Any]:
        if r.status_code >= 400:
            raise ApiError(_detail(r), r.status_code)
        try:
            return r.json()
        except ValueError as err:
            raise ApiError(
                self.t.gettext("the server at %(url)s sent an answer that is not JSON", url=self.server), r.status_code
            ) from err


def normalise_phone(phone: str) -> str:
    """Digits (and a leading +) only: "138 0013-8000" and "13800138000" are one number."""
    return re.sub(r"[\s().\-]", "", unicodedata.normalize("NFKC", phone))


def unknown_consent(version: str, t: Translator) -> str:
    """The sentence for a consent text version that does not exist (enroll/messages.py CONSENT_TEXTS)."""
    from enroll.messages import CONSENT_TEXT_VERSION

    return t.gettext("there is no consent text version %(version)s; the current one is %(current)s.",
                     version=repr(version), current=CONSENT_TEXT_VERSION)


def valid_until(text: str | None) -> str | None:
    """``--valid-until`` / the CSV's ``valid_until`` as the API wants it (an ISO time with its offset).

    A date is the **last day** of access: access ends at the following midnight, China time
    (core.i18n.DEFAULT_TIME_ZONE); a time without an offset is China time too. ValueError if unreadable.
    """
    if text is None or not text.strip():
        return None
    value = text.strip()
    china = zone(DEFAULT_TIME_ZONE)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=china)).isoformat()
    return datetime.combine(day + timedelta(days=1), dt_time(), tzinfo=china).isoformat()


def _payload(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _detail(r: httpx.Response) -> str:
    """The server's sentence for a refusal (FastAPI's ``detail``: a string, or a list of field errors)."""
    payload = _payload(r)
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(x) for x in item.get("loc", ()) if x not in ("body",))
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
        if parts:
            return "; ".join(parts)
    text = r.text.strip()
    return f"HTTP {r.status_code}" + (f": {text[:200]}" if text else "")


def _mime(label: str) -> str:
    ext = label.rsplit(".", 1)[-1].lower() if "." in label else ""
    types = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "webp": "image/webp"}
    return types.get(ext, "application/octet-stream")
