"""A station's sync side as its own process, for the fault tests: no camera, no door.

    python -m tests.faults.edge_station DATA_DIR PORT STATION --count N [--rate R] [--drain-only]

Queues entry events 0..N-1 through StationSync.enqueue (the agent's path into
the durable outbox) at about R per second, printing ``queued <i>`` after each
one has been committed, then ``all queued``, and ``drained`` once the outbox
is empty. Event ids are derived from (station, i), so the test knows every id
and a restarted process never invents new ones. ``--drain-only`` queues
nothing: it only delivers what a killed predecessor left in the outbox.
Runs until killed, or exits 0 after draining with ``--exit-when-drained``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid

from edge.config import EdgeSettings
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models.messages import Decision, EntryEvent

NAMESPACE = uuid.UUID("5f0d6a52-4f4b-4f1e-9d65-3b1c2f0e8a11")


def event_id(station: str, i: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{station}/{i}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("port", type=int)
    parser.add_argument("station")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="events per second; 0: as fast as possible")
    parser.add_argument("--drain-only", action="store_true")
    parser.add_argument("--exit-when-drained", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = EdgeSettings.build(
        station_id=args.station,
        data_dir=args.data_dir,
        mqtt={"host": "127.0.0.1", "port": args.port, "client_id": f"station-{args.station}"},
    )
    store = EdgeStore.open(settings.data_dir)
    sync = StationSync(settings, store, build_link(settings))
    sync.outbox.ack_timeout_s = 5.0  # a broker restart should not keep events waiting for long
    sync.start()
    print("started", flush=True)
    if not args.drain_only:
        pause = 1.0 / args.rate if args.rate else 0.0
        for i in range(args.count):
            sync.enqueue(
                EntryEvent(event_id=event_id(args.station, i), station_id=args.station, decision=Decision.GRANTED,
                           worker_id=f"w{i % 50}", reason=f"fault test {i}")
            )
            print(f"queued {i}", flush=True)
            if pause:
                time.sleep(pause)
        print("all queued", flush=True)
    while store.depth() > 0:
        time.sleep(0.05)
    print("drained", flush=True)
    if args.exit_when_drained:
        sync.stop()
        store.close()
        return 0
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
