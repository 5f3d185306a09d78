"""QR credentials: issue (token + PNG), list, show the QR again, revoke; the stations' public key.

Revoking a credential that stations would still accept appends a gallery
change (see server/credentials.py) and broadcasts it like any other; the
answer says which version carries it and which other credentials it voided.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server import credentials as creds
from server.api.deps import IngestDep, SessionDep, SettingsDep
from server.config import ServerSettings
from server.tables import Credential

router = APIRouter(tags=["credentials"])

CredentialId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="12 hex digits")]
Status = Literal["valid", "expired", "revoked", "void"]


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    valid_days: int = Field(default=365, ge=1, le=creds.MAX_VALID_DAYS, description="days until the credential expires")
    label: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] = Field(
        default="", description='what it is for, e.g. "printed card" or "phone"'
    )


class CredentialPublic(BaseModel):
    credential_id: str
    worker_id: str
    label: str
    issued_at: datetime
    expires_at: datetime
    bound_version: int = Field(description="the worker's gallery version it is bound to; stations refuse it once newer")
    revoked_at: datetime | None
    status: Status


class CredentialIssued(CredentialPublic):
    token: str = Field(description="the text in the QR code")
    qr_png_base64: str = Field(description="the QR code as a PNG image, base64")


class CredentialsPublic(BaseModel):
    items: list[CredentialPublic]


class CredentialRevoked(CredentialPublic):
    version: int | None = Field(
        description="gallery version that carries the revocation to the stations; null when stations refused it already"
    )
    also_void: list[str] = Field(description="the worker's other credentials this revocation voided (reissue them)")


class PublicKey(BaseModel):
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str = Field(description="raw 32-byte public key, base64")
    edge_config: str = Field(description="the line to put under `access:` in every station's config file")


def _signer(settings: ServerSettings) -> creds.Signer:
    try:
        return creds.signer_for(settings.data_dir)
    except creds.CredentialKeyError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None


def _public(row: Credential, state: creds.CredentialStatus) -> dict:
    return {
        "credential_id": row.credential_id,
        "worker_id": row.worker_id,
        "label": row.label,
        "issued_at": row.issued_at,
        "expires_at": row.expires_at,
        "bound_version": row.bound_version,
        "revoked_at": row.revoked_at,
        "status": state.value,
    }


@router.get("/credentials/public-key", response_model=PublicKey)
def public_key(settings: SettingsDep) -> PublicKey:
    """The key stations verify credentials with (creates the key pair on first use)."""
    key = _signer(settings).public_key
    return PublicKey(public_key=key, edge_config=f"qr_public_keys: [{key}]")


@router.post("/workers/{worker_id}/credentials", status_code=status.HTTP_201_CREATED, response_model=CredentialIssued)
def issue(worker_id: str, body: CredentialCreate, session: SessionDep, settings: SettingsDep) -> CredentialIssued:
    """Issue a QR credential to an active worker: the token and its QR code (show on a phone or print)."""
    row, token = creds.issue_credential(
        session=session, signer=_signer(settings), worker_id=worker_id, valid_days=body.valid_days, label=body.label
    )
    png = creds.qr_png(token)
    return CredentialIssued(
        **_public(row, creds.CredentialStatus.VALID), token=token, qr_png_base64=base64.b64encode(png).decode("ascii")
    )


@router.get("/workers/{worker_id}/credentials", response_model=CredentialsPublic)
def list_all(worker_id: str, session: SessionDep) -> CredentialsPublic:
    rows = creds.list_credentials(session=session, worker_id=worker_id)
    return CredentialsPublic(items=[CredentialPublic(**_public(row, state)) for row, state in rows])


@router.get(
    "/workers/{worker_id}/credentials/{credential_id}/qr.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def qr_image(worker_id: str, credential_id: CredentialId, session: SessionDep, settings: SettingsDep) -> Response:
    """The QR code of a valid credential again (to reprint it); 410 once stations refuse it."""
    for row, state in creds.list_credentials(session=session, worker_id=worker_id):
        if row.credential_id == credential_id:
            if state is not creds.CredentialStatus.VALID:
                raise HTTPException(status.HTTP_410_GONE, f"credential {credential_id} is {state.value}")
            token = _signer(settings).token(creds.claims_of(row))
            return Response(creds.qr_png(token), media_type="image/png")
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"worker {worker_id!r} has no credential {credential_id!r}")


@router.delete("/workers/{worker_id}/credentials/{credential_id}", response_model=CredentialRevoked)
def revoke(worker_id: str, credential_id: CredentialId, session: SessionDep, ingest: IngestDep) -> CredentialRevoked:
    """Revoke a credential; stations refuse it once they have the gallery change in ``version``."""
    done = creds.revoke_credential(session=session, worker_id=worker_id, credential_id=credential_id)
    if done.change is not None and ingest is not None:  # without MQTT, stations get it with their next sync
        ingest.publish_change(done.change)
    return CredentialRevoked(
        **_public(done.credential, creds.CredentialStatus.REVOKED),
        version=done.change.version if done.change else None,
        also_void=done.voided,
    )
