"""The study's data files: the 1:N protocol CSV and LFW's pairs.txt, as plain text in."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Protocol:
    """A 1:N protocol: (identity, file relative to the CSV folder) per role."""

    enroll: list[tuple[str, str]]
    genuine: list[tuple[str, str]]
    impostor: list[tuple[str, str]]


def read_protocol(text: str) -> Protocol:
    rows: dict[str, list[tuple[str, str]]] = {"enroll": [], "probe_genuine": [], "probe_impostor": []}
    reader = csv.reader(text.splitlines())
    if next(reader, None) != ["role", "identity", "file"]:
        raise ValueError("protocol CSV must start with the header role,identity,file")
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 3 or row[0] not in rows or not row[1] or not row[2]:
            raise ValueError(f"protocol line {line_no}: expected role,identity,file with a known role, got {row}")
        rows[row[0]].append((row[1], row[2]))
    return Protocol(rows["enroll"], rows["probe_genuine"], rows["probe_impostor"])


def read_pairs(text: str) -> tuple[list[tuple[str, int, str, int]], list[tuple[str, int, str, int]]]:
    """LFW pairs.txt: (matched, mismatched) as (name1, n1, name2, n2)."""
    matched, mismatched = [], []
    for line_no, line in enumerate(text.splitlines()[1:], start=2):
        f = line.split("\t")
        if len(f) == 3:
            matched.append((f[0], int(f[1]), f[0], int(f[2])))
        elif len(f) == 4:
            mismatched.append((f[0], int(f[1]), f[2], int(f[3])))
        elif line.strip():
            raise ValueError(f"pairs line {line_no}: expected 3 or 4 tab-separated fields")
    return matched, mismatched


def lfw_file(faces: Path, name: str, n: int) -> str:
    for folder in ("lfw_dev", "lfw_dev_strangers"):
        rel = f"{folder}/{name}/{name}_{n:04d}.jpg"
        if (faces / rel).is_file():
            return rel
    raise FileNotFoundError(f"{name} image {n} is in neither lfw_dev nor lfw_dev_strangers")
