"""1:N matching: pure numpy, checked against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.matcher import NO_MATCH, Gallery


def _rand(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, (n, 128)).astype(np.float32)


def test_empty_gallery_matches_nobody() -> None:
    g = Gallery()
    assert len(g) == 0
    assert g.match(_rand(1)[0]) == NO_MATCH
    assert g.distances(_rand(1)[0]).shape == (0,)


def test_distances_equal_the_euclidean_definition() -> None:
    vecs = _rand(50)
    g = Gallery.from_arrays([f"w{i}" for i in range(50)], vecs)
    q = _rand(1, seed=9)[0]
    expected = np.linalg.norm(vecs - q, axis=1)
    np.testing.assert_allclose(g.distances(q), expected, rtol=1e-5, atol=1e-5)


def test_nearest_and_runner_up_are_different_identities() -> None:
    base = _rand(3)
    # w0 has two samples, both near the query; the runner-up must be w1, not w0's second sample.
    q = base[0]
    entries = [("w0", base[0] + 0.001), ("w0", base[0] + 0.002), ("w1", base[1]), ("w2", base[2])]
    m = Gallery(entries).match(q)
    assert m.identity == "w0"
    assert m.second_identity in {"w1", "w2"}
    assert m.second_identity != m.identity
    assert m.margin == pytest.approx(m.second_distance - m.distance)
    assert m.distance < 0.05


def test_identity_distance_is_its_nearest_sample() -> None:
    a, b, c = _rand(3, seed=4)
    g = Gallery([("x", a), ("x", b), ("y", c)])
    per_id = g.identity_distances(a)
    assert per_id[0] == pytest.approx(0.0, abs=1e-3)
    assert per_id[1] == pytest.approx(float(np.linalg.norm(c - a)), rel=1e-4)


def test_single_identity_has_no_runner_up() -> None:
    v = _rand(1)[0]
    m = Gallery([("only", v)]).match(v)
    assert m.identity == "only" and m.second_identity is None and math.isinf(m.second_distance)


def test_wrong_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 128"):
        Gallery([("x", np.zeros(64))])


def test_large_gallery_agrees_with_brute_force() -> None:
    vecs = _rand(5000, seed=2)
    ids = [f"w{i // 2}" for i in range(5000)]  # two samples per worker
    g = Gallery.from_arrays(ids, vecs)
    for s in range(5):
        q = _rand(1, seed=100 + s)[0]
        d = np.linalg.norm(vecs - q, axis=1)
        order = np.argsort(d)
        best = ids[order[0]]
        second = next(ids[i] for i in order if ids[i] != best)
        m = g.match(q)
        assert (m.identity, m.second_identity) == (best, second)
        assert m.distance == pytest.approx(d[order[0]], rel=1e-4)
