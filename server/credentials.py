"""QR credentials on the server: the signing key, and issuing, listing and revoking credentials.

The key is Ed25519. Its private half lives only in ``<data_dir>/qr_signing_key.pem``
(PKCS#8 PEM), created on first use with mode 0600 and refused if anyone else
may read it; stations get the public half (``GET /api/credentials/public-key``
-> ``access.qr_public_keys`` in the edge config). Several server processes
must share the same file.

Revocation rides on the gallery sync (no contract change): a credential is
*bound* to the worker's gallery version when issued, and a station refuses it
once it holds a newer version for that worker. Revoking therefore appends a
gallery change for the worker (re-broadcasting its unchanged state), which
voids every credential of that worker issued before it; the API lists those so
they can be reissued. Any other change of the worker (suspension, reinstatement,
new validity window) voids them the same way. A station has the revocation
once it has acked that gallery version (``stations.gallery_version_acked``).

Statuses: ``valid``; ``expired``; ``revoked`` (explicitly); ``void`` (the
worker changed after issue, so stations refuse it).
"""

from __future__ import annotations

import base64
import enum
import io
import logging
import os
import secrets
import stat
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import qrcode
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import credential as cred
from models.messages import GalleryChange
from server import gallery
from server.errors import Conflict, NotFound, ServerError
from server.tables import Credential, GalleryChangeRow, Worker, WorkerStatus

log = logging.getLogger(__name__)

KEY_FILE = "qr_signing_key.pem"
MAX_VALID_DAYS = 1825


class CredentialKeyError(ServerError, RuntimeError):
    """The signing key file cannot be created or is unsafe to use."""


class CredentialStatus(str, enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    VOID = "void"


class Signer:
    """Signs credential payloads with the server's Ed25519 key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @property
    def public_key(self) -> str:
        """The raw 32-byte public key, base64: what stations put in ``access.qr_public_keys``."""
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    def token(self, claims: cred.CredentialClaims) -> str:
        payload = claims.payload()
        return cred.to_text(payload, self._key.sign(payload))


_signers: dict[Path, Signer] = {}
_signers_lock = threading.Lock()


def signer_for(data_dir: Path) -> Signer:
    """The signer of ``data_dir``'s key, creating the key on first use (cached per file)."""
    path = (Path(data_dir) / KEY_FILE).resolve()
    with _signers_lock:
        if path not in _signers:
            _signers[path] = Signer(_load_or_create(path))
        return _signers[path]


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            # Written whole to a private temporary file, then linked into place: another process
            # never reads a half-written key, and if it won the race its key is the one kept.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".qr-key-")
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, pem)
                os.fsync(fd)
                os.close(fd)
                try:
                    os.link(tmp, path)
                    log.warning("created the QR signing key %s (mode 0600): back it up, never commit it", path)
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialKeyError(
                f"the QR signing key {path} may be read by other users (mode {stat.S_IMODE(mode):o}): "
                f"run chmod 600 {path}"
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise CredentialKeyError(f"cannot create or read the QR signing key {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise CredentialKeyError(f"{path} is not a PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def claims_of(row: Credential) -> cred.CredentialClaims:
    issued = int(row.issued_at.timestamp())
    days = round((row.expires_at - row.issued_at).total_seconds() / 86400)
    return cred.CredentialClaims(row.worker_id, row.credential_id, issued, days, row.bound_version)


def worker_version(*, session: Session, worker_id: str) -> int:
    """The version of the worker's newest gallery change: what a synced station holds for them."""
    stmt = select(func.coalesce(func.max(GalleryChangeRow.version), 0)).where(GalleryChangeRow.worker_id == worker_id)
    return int(session.scalar(stmt) or 0)


def status_of(row: Credential, *, latest: int, now: datetime) -> CredentialStatus:
    if row.revoked_at is not None:
        return CredentialStatus.REVOKED
    if row.expires_at <= now:
        return CredentialStatus.EXPIRED
    if latest > row.bound_version:
        return CredentialStatus.VOID
    return CredentialStatus.VALID


def issue_credential(
    *, session: Session, signer: Signer, worker_id: str, valid_days: int, label: str = "", now: datetime | None = None
) -> tuple[Credential, str]:
    """A new credential for an active worker, and its token; commits."""
    if not 1 <= valid_days <= MAX_VALID_DAYS:
        raise ValueError(f"valid_days must be 1..{MAX_VALID_DAYS}")
    worker = gallery.get_worker(session=session, worker_id=worker_id)
    if worker.status != WorkerStatus.ACTIVE.value:
        raise Conflict(f"worker {worker_id} is {worker.status}: reinstate them before issuing a credential")
    issued = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    credential_id = secrets.token_bytes(cred.ID_BYTES).hex()
    while session.get(Credential, credential_id) is not None:  # 48 random bits: a clash is a curiosity
        credential_id = secrets.token_bytes(cred.ID_BYTES).hex()
    row = Credential(
        credential_id=credential_id,
        worker_id=worker_id,
        label=label,
        issued_at=issued,
        expires_at=issued + timedelta(days=valid_days),
        bound_version=worker_version(session=session, worker_id=worker_id),
    )
    token = signer.token(claims_of(row))  # before the commit: a bad claim never leaves a row behind
    session.add(row)
    session.commit()
    log.info("issued QR credential %s to worker %s, valid %d days", credential_id, worker_id, valid_days)
    return row, token


def list_credentials(
    *, session: Session, worker_id: str, now: datetime | None = None
) -> list[tuple[Credential, CredentialStatus]]:
    gallery.get_worker(session=session, worker_id=worker_id)
    now = now or datetime.now(timezone.utc)
    latest = worker_version(session=session, worker_id=worker_id)
    rows = session.scalars(
        select(Credential)
        .where(Credential.worker_id == worker_id)
        .order_by(Credential.issued_at, Credential.credential_id)
    )
    return [(row, status_of(row, latest=latest, now=now)) for row in rows]


def get_credential(*, session: Session, worker_id: str, credential_id: str) -> Credential:
    row = session.get(Credential, credential_id)
    if row is None or row.worker_id != worker_id:
        raise NotFound(f"worker {worker_id!r} has no credential {credential_id!r}")
    return row


@dataclass(frozen=True)
class Revocation:
    credential: Credential
    change: GalleryChange | None
    """The gallery change that carries the revocation to the stations; None if none was needed."""
    voided: list[str]
    """The worker's other credentials that were valid and are now void (reissue them if still wanted)."""


def revoke_credential(
    *, session: Session, worker_id: str, credential_id: str, now: datetime | None = None
) -> Revocation:
    """Mark the credential revoked and, if stations would still accept it, append a gallery change; commits."""
    now = now or datetime.now(timezone.utc)
    row = get_credential(session=session, worker_id=worker_id, credential_id=credential_id)
    if row.revoked_at is not None:
        return Revocation(row, None, [])
    latest = worker_version(session=session, worker_id=worker_id)
    was = status_of(row, latest=latest, now=now)
    row.revoked_at = now
    if was is not CredentialStatus.VALID:  # stations refuse it already: no need to disturb the others
        session.commit()
        return Revocation(row, None, [])
    others = [
        other.credential_id
        for other, status in list_credentials(session=session, worker_id=worker_id, now=now)
        if status is CredentialStatus.VALID and other.credential_id != credential_id
    ]
    worker: Worker = gallery.get_worker(session=session, worker_id=worker_id)
    # set_status appends a change carrying the worker's current state and commits it together with revoked_at.
    _worker, change = gallery.set_status(session=session, worker_id=worker_id, status=WorkerStatus(worker.status))
    log.info("revoked QR credential %s of worker %s at gallery version %d", credential_id, worker_id, change.version)
    return Revocation(row, change, others)


def qr_png(token: str, *, box_size: int = 8) -> bytes:
    """The token as a PNG QR code (error correction M, 4-module quiet zone)."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=4)
    code.add_data(token)
    code.make(fit=True)
    buf = io.BytesIO()
    code.make_image().save(buf)
    return buf.getvalue()
