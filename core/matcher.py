"""1:N matching of a face encoding against a gallery: pure numpy, no models.

The gallery may hold several encodings per identity (enrollment samples); a
query is scored against each *identity* by its nearest sample, so the
runner-up is always a different person, which is what the decision policy's
margin needs. Distances are Euclidean, the metric dlib's encoder was trained
for (face_recognition's ``face_distance``).

A Gallery is immutable: a station builds a new one and swaps the reference,
so a frame is never matched against a half-applied update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.encoding import EMBEDDING_DIM


@dataclass(frozen=True, slots=True)
class Match:
    """The best and second-best identities for one query (None when absent)."""

    identity: str | None
    distance: float
    second_identity: str | None
    second_distance: float

    @property
    def margin(self) -> float:
        return self.second_distance - self.distance


NO_MATCH = Match(None, float("inf"), None, float("inf"))

DEFAULT_THRESHOLD = 0.56
"""The door's match threshold (edge.policy.PolicyConfig.threshold's default), chosen with
``./run evaluate`` for template enrollment; the server's duplicate check uses the same number."""


class Gallery:
    """Enrolled encodings, ``(N, 128) float32``, with the identity of each row."""

    __slots__ = ("_vectors", "_owner", "_identities", "_sq_norms", "_one_per_identity", "version")

    def __init__(self, entries: Sequence[tuple[str, np.ndarray]] = (), *, version: int = 0) -> None:
        ids: list[str] = []
        index: dict[str, int] = {}
        owner: list[int] = []
        rows: list[np.ndarray] = []
        for identity, vec in entries:
            arr = np.asarray(vec, dtype=np.float32).reshape(-1)
            if arr.shape != (EMBEDDING_DIM,):
                raise ValueError(f"encoding for {identity!r} has {arr.size} values, expected {EMBEDDING_DIM}")
            if identity not in index:
                index[identity] = len(ids)
                ids.append(identity)
            owner.append(index[identity])
            rows.append(arr)
        self._identities = tuple(ids)
        self._vectors = np.vstack(rows).astype(np.float32) if rows else np.empty((0, EMBEDDING_DIM), np.float32)
        self._owner = np.asarray(owner, dtype=np.int64)
        self._sq_norms = np.einsum("ij,ij->i", self._vectors, self._vectors)
        self._one_per_identity = len(ids) == len(rows)
        self.version = version

    @classmethod
    def from_arrays(cls, identities: Sequence[str], vectors: np.ndarray, *, version: int = 0) -> "Gallery":
        return cls(list(zip(identities, np.asarray(vectors, dtype=np.float32))), version=version)

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def identities(self) -> tuple[str, ...]:
        return self._identities

    def distances(self, query: np.ndarray) -> np.ndarray:
        """Distance from the query to every row, float32 (N,)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if len(self) == 0:
            return np.empty(0, dtype=np.float32)
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab: one matrix-vector product for the whole gallery.
        sq = self._sq_norms + np.float32(q @ q) - 2.0 * (self._vectors @ q)
        return np.sqrt(np.maximum(sq, 0.0, dtype=np.float32))

    def identity_distances(self, query: np.ndarray) -> np.ndarray:
        """Per identity, the distance of its nearest sample: (n_identities,)."""
        d = self.distances(query)
        if self._one_per_identity:
            return d
        out = np.full(len(self._identities), np.inf, dtype=np.float32)
        if d.size:
            np.minimum.at(out, self._owner, d)
        return out

    def match(self, query: np.ndarray) -> Match:
        """Nearest identity and runner-up identity for one encoding."""
        per_id = self.identity_distances(query)
        if per_id.size == 0:
            return NO_MATCH
        if per_id.size == 1:
            return Match(self._identities[0], float(per_id[0]), None, float("inf"))
        two = np.argpartition(per_id, 1)[:2]
        a, b = (two[0], two[1]) if per_id[two[0]] <= per_id[two[1]] else (two[1], two[0])
        return Match(self._identities[a], float(per_id[a]), self._identities[b], float(per_id[b]))
