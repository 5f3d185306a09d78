"""Time from camera start to a saved enrollment, with a scripted capture (issue 6, item 8).

    python -m bench.enroll_time [--video FILE] [--runs N] [--samples N]

The camera is a real clip from the shared data (default: Intel's
head-pose-face-detection-male.gif, CC BY 4.0: one man in front of the camera,
talking, 5 s at 12.5 fps; ``--video`` takes another, e.g. face_recognition's
Hamilton clip, where the face comes into view only after about 3 s), played
at its own frame rate, dropping frames while one is being checked and from
the start again when it ends, as a live camera delivers them. Everything else is what
``./run enroll camera --yes`` does: local quality checks on every frame
(core.quality), each chosen frame uploaded to a real server (ServerRuntime
on a temporary SQLite file, the embedded MQTT broker) that checks it again
and makes its template, then the worker saved with consent.

The clock runs from the camera being opened (models already loaded on both
sides, as at a session under way) to the server's 201 answer. Each run
enrolls the worker afresh (the previous one is deleted). The last line printed
is one JSON object: seconds per run and their median, samples, frames checked
locally, the time spent waiting for the server's sample checks, and the load
average (the figure depends on a quiet machine: other work slows both sides).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
DEFAULT_VIDEO = FACES / "videos" / "intel_sample_videos" / "head-pose-face-detection-male.gif"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enroll_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="clip played as the camera")
    parser.add_argument("--runs", type=int, default=3, help="enrollments to time (default 3)")
    parser.add_argument("--samples", type=int, default=3, choices=(3, 4, 5), help="samples per enrollment")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        print(f"bench: no video at {args.video} (set WAYSTATION_FACES_DIR)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    import httpx

    from core.broker import EmbeddedBroker, free_port
    from core.faces import FaceEngine
    from core.i18n import translator
    from enroll.camera import StatusLine, collect, open_frames
    from enroll.capture import ApiError, Consent, EnrollmentApi, WorkerFields
    from enroll.messages import CONSENT_TEXT_VERSION
    from server.config import ServerSettings
    from server.runtime import ServerRuntime

    t = translator("en")
    token = secrets.token_urlsafe(24)
    client_engine = FaceEngine().load()
    results: list[dict[str, float | int]] = []
    with tempfile.TemporaryDirectory(prefix="waystation-enroll-bench-") as tmp:
        broker = EmbeddedBroker().start()
        try:
            settings = ServerSettings.load(None, data_dir=Path(tmp), http_port=free_port(), api_token=token,
                                           mqtt_host=broker.host, mqtt_port=broker.port)
            # The server's own engine, loaded before the clock runs (a server that is up has its models loaded).
            with ServerRuntime(settings, face_engine=FaceEngine().load()) as server, \
                    EnrollmentApi(server.url, token, t) as api:
                for run in range(1, args.runs + 1):
                    started = time.monotonic()
                    got = collect(open_frames(args.video, t), client_engine, api, t, count=args.samples,
                                  line=StatusLine(io.StringIO()))
                    if len(got.samples) < args.samples:
                        print(f"run {run}: only {len(got.samples)} good samples within 60 s", file=sys.stderr)
                        return 1
                    out = api.enroll(WorkerFields(name="Bench Worker", phone="13800000000", category="other"),
                                     Consent(CONSENT_TEXT_VERSION), got.samples)
                    seconds = time.monotonic() - started
                    load = os.getloadavg()[0]
                    results.append({"run": run, "seconds": round(seconds, 2), "samples": len(got.samples),
                                    "frames_checked": got.frames, "server_sample_s": round(got.server_s, 2),
                                    "load_avg_1min": round(load, 2)})
                    print(f"run {run}: saved {seconds:.2f} s after the camera started ({len(got.samples)} "
                          f"samples, {got.frames} frames checked here, {got.server_s:.2f} s waiting for the "
                          f"server's sample checks; load average {load:.1f} on {os.cpu_count()} CPUs)")
                    httpx.delete(f"{server.url}/api/workers/{out['worker_id']}",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
        except ApiError as err:
            print(f"bench: the server refused: {err.message} ({err.status})", file=sys.stderr)
            return 1
        finally:
            broker.stop()
    times = [float(r["seconds"]) for r in results]
    print(json.dumps({"video": args.video.name, "runs": results, "median_s": round(statistics.median(times), 2),
                      "max_s": max(times)}))
    return 0

if __name__ == "__main__":
    sys.exit(main())
