"""The QR credential's wire format, shared by the server (which signs) and the stations (which verify).

Only the layout lives here (no keys, no crypto): the server signs with
Ed25519 in ``server.credentials``, a station verifies in ``edge.qr`` with the
public key from its config. The text in the QR code is::

    WS1.<base64url, no padding, of payload || signature>

``signature`` is the 64-byte Ed25519 signature of ``payload``; ``payload`` is
big-endian:

====  ==========  ==========================================================
size  field       meaning
====  ==========  ==========================================================
1     format      1
4     issued      Unix seconds (uint32)
2     valid_days  the credential expires ``valid_days`` x 86400 s after issued
6     id          credential id (random; shown as 12 hex digits)
1-9   bound       the worker's gallery version when issued (unsigned LEB128)
1     id form     0: worker id as ASCII; 1: 32 lowercase hex digits as 16 bytes
n     worker id   up to 64 bytes
====  ==========  ==========================================================

``bound`` is how revocation travels through the gallery sync: a station
refuses a credential whose bound version is older than the version it holds
for that worker (see docs/protocol.md, "QR credentials").

About 96 bytes for the server's 32-hex worker ids: 132 characters, a
version 8 QR code (49 x 49 modules) at error correction level M.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from models.errors import ContractError

PREFIX = "WS1."
FORMAT = 1
SIGNATURE_BYTES = 64
ID_BYTES = 6
MAX_VALID_DAYS = 65535
MAX_TEXT_CHARS = 400  # anything longer in a QR code is not one of ours
_HEAD = struct.Struct(">BIH")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CREDENTIAL_ID = re.compile(r"^[0-9a-f]{12}$")


class MalformedCredential(ContractError):
    """The text has our prefix but is not a well-formed credential."""


@dataclass(frozen=True, slots=True)
class CredentialClaims:
    """What a credential says. Trust it only after its signature was verified."""

    worker_id: str
    credential_id: str
    issued: int
    valid_days: int
    bound_version: int

    def __post_init__(self) -> None:
        if not _WORKER_ID.match(self.worker_id):
            raise ValueError(f"worker id {self.worker_id!r} is not 1-64 characters of A-Z a-z 0-9 _ -")
        if not _CREDENTIAL_ID.match(self.credential_id):
            raise ValueError(f"credential id {self.credential_id!r} is not {2 * ID_BYTES} lowercase hex digits")
        if not 0 <= self.issued < 2**32:
            raise ValueError("issued must fit in 32 bits (Unix seconds until 2106)")
        if not 1 <= self.valid_days <= MAX_VALID_DAYS:
            raise ValueError(f"valid_days must be 1..{MAX_VALID_DAYS}")
        if not 0 <= self.bound_version < 2**63:
            raise ValueError("bound_version must be 0..2**63-1")

    @property
    def expires(self) -> int:
        """Unix seconds from which the credential is no longer valid."""
        return self.issued + self.valid_days * 86400

    def payload(self) -> bytes:
        """The bytes that are signed."""
        head = _HEAD.pack(FORMAT, self.issued, self.valid_days) + bytes.fromhex(self.credential_id)
        if _HEX32.match(self.worker_id):
            worker = b"\x01" + bytes.fromhex(self.worker_id)
        else:
            worker = b"\x00" + self.worker_id.encode("ascii")
        return head + _uvarint(self.bound_version) + worker


def to_text(payload: bytes, signature: bytes) -> str:
    """The QR code's text for a signed payload."""
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError(f"an Ed25519 signature has {SIGNATURE_BYTES} bytes, not {len(signature)}")
    return PREFIX + base64.urlsafe_b64encode(payload + signature).decode("ascii").rstrip("=")


def is_credential(text: str) -> bool:
    """Whether a QR code's text claims to be a Waystation credential (other QR codes are ignored)."""
    return text.startswith(PREFIX)


def split(text: str) -> tuple[bytes, bytes]:
    """(payload, signature) of a credential text; raises MalformedCredential."""
    if not is_credential(text):
        raise MalformedCredential(f"not a Waystation credential (no {PREFIX} prefix)")
    if len(text) > MAX_TEXT_CHARS:
        raise MalformedCredential(f"credential text is {len(text)} characters, more than {MAX_TEXT_CHARS}")
    body = text[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as err:
        raise MalformedCredential(f"credential is not base64url: {err}") from err
    if len(raw) < _HEAD.size + ID_BYTES + 3 + SIGNATURE_BYTES:
        raise MalformedCredential(f"credential is too short ({len(raw)} bytes)")
    return raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]


def parse(payload: bytes) -> CredentialClaims:
    """The claims of a payload; raises MalformedCredential. Does NOT check the signature."""
    try:
        fmt, issued, valid_days = _HEAD.unpack_from(payload)
        if fmt != FORMAT:
            raise MalformedCredential(f"credential format {fmt} is not supported (this station reads {FORMAT})")
        at = _HEAD.size
        credential_id = payload[at : at + ID_BYTES].hex()
        bound, at = _read_uvarint(payload, at + ID_BYTES)
        form, worker = payload[at], payload[at + 1 :]
        if form == 1 and len(worker) == 16:
            worker_id = worker.hex()
        elif form == 0:
            worker_id = worker.decode("ascii")
        else:
            raise MalformedCredential(f"unknown worker id form {form}")
        return CredentialClaims(worker_id, credential_id, issued, valid_days, bound)
    except MalformedCredential:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        raise MalformedCredential(f"credential payload is damaged: {err}") from err


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(9):
        byte = data[at + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at + i + 1
        shift += 7
    raise MalformedCredential("bound version is longer than 9 bytes")
