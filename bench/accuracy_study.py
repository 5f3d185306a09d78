"""Which recognition ideas help on the shared LFW dev data (issue 3, items 2 and 4).

    python bench/accuracy_study.py [--faces DIR] [--out bench/out]

Measures, on ``lfw_dev_protocol_1toN.csv`` (40 enrolled from one photo each, 134
genuine probes, 40 never-enrolled strangers) and ``lfw_dev_pairs.txt``: the
library's example rule, nearest identity, the margin rule, jittered and
several encodings per worker, cohort score normalisation, 5- vs 68-point
alignment, detection upsampling for small faces, agreement over frames, and
how false accepts grow with the number enrolled. Prints one table; writes the
table, the threshold/margin sweeps and the gallery-size figures as CSV (plot
data) and the DET plot (``det_study.png``) under ``--out``, next to an encoding
cache (``encodings.npz``) that turns a first run of about 10 minutes into reruns
of under a minute. The code is in ``bench/accuracy/``; this file is the entry point.

Besides the 40 strangers, every genuine probe is also tried with its own
identity removed from the gallery ("exclusion impostors", 134 more stranger
trials against 39 people): 40 trials alone cannot tell a 2% false-accept rule
from a 0% one. A genuine probe counts as a false reject unless it is accepted
as itself (no face, rejected and misidentified all count), as in issue 3.

The study code is deliberately standalone (numpy over core.matcher distances);
the door's decision policy lives in edge/policy.py and ``./run evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: python bench/accuracy_study.py
    sys.path.insert(0, str(REPO))

from bench.accuracy.cli import main  # noqa: E402
from bench.accuracy.encodings import ENROLL_AUGS, PROBE_FRAMES, TEMPLATE, Encoder, EncodingCache, Variant  # noqa: E402
from bench.accuracy.protocol import Protocol, read_pairs, read_protocol  # noqa: E402
from bench.accuracy.rules import (  # noqa: E402
    EXCLUDED,
    GENUINE,
    STRANGER,
    Counts,
    Trials,
    best_point,
    centre_face,
    count,
    decide,
    dedupe,
    first_within,
    largest_face,
    rank,
    safe_region,
    votes_to_grant,
)
from bench.accuracy.stats import TailModel, binom_upper, nn_false_accept, two_smallest  # noqa: E402
from bench.accuracy.study import Study, choose_defaults  # noqa: E402

__all__ = [
    "EXCLUDED", "ENROLL_AUGS", "GENUINE", "PROBE_FRAMES", "STRANGER", "TEMPLATE", "Counts", "Encoder", "EncodingCache",
    "Protocol", "Study", "TailModel", "Trials", "Variant", "best_point", "binom_upper", "centre_face",
    "choose_defaults",
    "count", "decide", "dedupe", "first_within", "largest_face", "main", "nn_false_accept", "rank", "read_pairs",
    "read_protocol", "safe_region", "two_smallest", "votes_to_grant",
]

if __name__ == "__main__":
    raise SystemExit(main())
