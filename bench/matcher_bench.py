"""``python -m bench matcher``: 1:N matching time of core.matcher.Gallery, on one core.

    python -m bench matcher [--enrolled 100000] [--queries 300] [--samples 1] [--core 0]

Builds a gallery of synthetic 128-d float32 encodings (``--samples`` per
worker: 1 = one template per worker, 4 = four enrollment photos each) and
times ``Gallery.match`` for random queries, pinned to one core with
OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1 (set before NumPy is imported; run it
as its own process). Prints the figures, then one JSON line:
``enrolled``, ``samples``, ``match_p50_ms``, ``match_p95_ms``, ``build_s``,
``gallery_mb`` and ``target_ms`` (5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TARGET_MS = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench matcher", description=__doc__.split("\n")[0])
    parser.add_argument("--enrolled", type=int, default=100_000, help="gallery rows (default 100000)")
    parser.add_argument("--samples", type=int, default=1, help="encodings per worker (default 1)")
    parser.add_argument("--queries", type=int, default=300, help="queries timed (default 300)")
    parser.add_argument("--core", type=int, default=0, help="the CPU core to pin to (default 0)")
    ns = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # effective only if NumPy is not imported yet (python -m bench matcher)
    pinned = f"core {ns.core}"
    try:
        os.sched_setaffinity(0, {ns.core})
    except (AttributeError, OSError) as err:
        pinned = f"not pinned ({err})"

    import numpy as np

    from core.matcher import Gallery

    rng = np.random.default_rng(7)
    rows = max(1, ns.enrolled)
    vectors = rng.normal(0.0, 0.09, size=(rows, 128)).astype(np.float32)  # about the spread of dlib encodings
    names = [f"w{i // max(1, ns.samples):06d}" for i in range(rows)]
    started = time.perf_counter()
    gallery = Gallery.from_arrays(names, vectors, version=1)
    build_s = time.perf_counter() - started
    queries = rng.normal(0.0, 0.09, size=(ns.queries + 10, 128)).astype(np.float32)
    for q in queries[:10]:
        gallery.match(q)  # warm caches
    times = []
    for q in queries[10:]:
        t0 = time.perf_counter()
        gallery.match(q)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    p50, p95 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"{rows} encodings ({len(gallery.identities)} workers x {ns.samples}), {pinned}, {len(times)} queries")
    print(f"match: p50 {p50:.2f} ms, p95 {p95:.2f} ms (target <= {TARGET_MS:g} ms); gallery built in {build_s:.2f} s, "
          f"{vectors.nbytes / 2**20:.0f} MB of encodings")
    print(json.dumps({"enrolled": rows, "samples": ns.samples, "match_p50_ms": round(p50, 3),
                      "match_p95_ms": round(p95, 3), "build_s": round(build_s, 3),
                      "gallery_mb": round(vectors.nbytes / 2**20, 1), "target_ms": TARGET_MS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
