"""The 1:N protocol file: a CSV with ``role,identity,file`` rows, checked before any model loads."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

ROLES = ("enroll", "probe_genuine", "probe_impostor")


class ProtocolError(EdgeError, ValueError):
    """The protocol file cannot be used; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class Protocol:
    """(identity, photo path) per role, in file order."""

    enroll: list[tuple[str, Path]]
    genuine: list[tuple[str, Path]]
    impostor: list[tuple[str, Path]]


def read_protocol(path: Path) -> Protocol:
    """Parse and check a protocol CSV: the three columns in any order (more are ignored), known roles,
    every photo present (relative to the CSV's folder), genuine probes of enrolled people only,
    impostors never enrolled. Every problem is one ProtocolError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ProtocolError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from err
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in ("role", "identity", "file") if c not in (reader.fieldnames or [])]
    if missing:
        raise ProtocolError(f"{path}: missing column(s) {', '.join(missing)}; the header must name role,identity,file")
    rows: dict[str, list[tuple[str, Path]]] = {r: [] for r in ROLES}
    for line, row in enumerate(reader, start=2):
        role, identity, rel = ((row.get(k) or "").strip() for k in ("role", "identity", "file"))
        if not (role or identity or rel):
            continue
        if role not in rows:
            raise ProtocolError(f"{path} line {line}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if not identity or not rel:
            raise ProtocolError(f"{path} line {line}: identity and file must not be empty")
        photo = path.parent / rel
        if not photo.is_file():
            raise ProtocolError(f"{path} line {line}: photo file {rel!r} not found in {path.parent}")
        rows[role].append((identity, photo))
    enrolled = {i for i, _ in rows["enroll"]}
    for i, p in rows["probe_genuine"]:
        if i not in enrolled:
            raise ProtocolError(f"{path}: genuine probe {p.name} is of {i!r}, who has no enroll row")
    for i, p in rows["probe_impostor"]:
        if i in enrolled:
            raise ProtocolError(f"{path}: impostor probe {p.name} is of {i!r}, who is enrolled")
    if not rows["enroll"] or not (rows["probe_genuine"] or rows["probe_impostor"]):
        raise ProtocolError(f"{path}: needs at least one enroll row and one probe row")
    return Protocol(rows["enroll"], rows["probe_genuine"], rows["probe_impostor"])
