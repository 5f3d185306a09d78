"""``python -m bench [COMMAND] [ARGS]`` (``./run bench ...``): Waystation's measurements.

Commands (each module has a ``main(argv) -> int``; ``--help`` on any of them):

    pipeline   the agent's door path against face_recognition's fast example (the default)
    matcher    1:N matching time with 100,000 enrolled
    latency    decision time in real time, encoding in-process against encoder processes
    liveness   the liveness study (bench/liveness_study.py)
    sync       sync: ingest, snapshot, deletion reach, outbox drain (bench/sync_bench.py)
    admin      the admin app on 1,000,000 entries in PostgreSQL (bench/admin.py)

With no command, or when the first argument is an option, ``pipeline`` runs:
``./run bench --quick`` is ``./run bench pipeline --quick``. Add a command by
adding a line to COMMANDS. Modules are imported only when chosen, so a
benchmark can pin itself to a core and set thread counts before NumPy loads.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("bench.pipeline_bench", "the agent's door path against face_recognition's fast example"),
    "matcher": ("bench.matcher_bench", "1:N matching time with 100,000 enrolled"),
    "latency": ("bench.latency_bench", "decision time in real time, encoding in-process against worker processes"),
    "liveness": ("bench.liveness_study", "does liveness pass real people and reject held photos"),
    "sync": ("bench.sync_bench", "ingest (PostgreSQL, SQLite), snapshot, deletion to 50 stations, outbox drain"),
    "enroll": ("bench.enroll_time", "time from camera start to a saved enrollment on a real server"),
    "enroll-quality": ("bench.enroll_quality", "enrollment quality checks on real and spoiled photos"),
    "admin": ("bench.admin", "entry-log pages, dashboard and CSV export on 1,000,000 entries in PostgreSQL"),
}
DEFAULT = "pipeline"


def usage() -> str:
    lines = ["usage: python -m bench [COMMAND] [ARGS]   (./run bench ...)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" + (" (default)" if name == DEFAULT else "") for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("help", "-h", "--help"):
        print(usage())
        return 0
    name = DEFAULT if not args or args[0].startswith("-") else args.pop(0)
    if name not in COMMANDS:
        print(f"bench: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
