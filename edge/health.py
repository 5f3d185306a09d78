"""The station's ``/metrics`` (Prometheus text format) and ``/healthz`` on a small HTTP listener.

The only edge module importing prometheus_client. The frame loop pays one
counter increment per decision (:meth:`EdgeMetrics.decided`); everything else
is read at scrape time from what the agent keeps anyway (its frame counts, the
pipeline's step counts, the outbox in SQLite, the MQTT link, the gallery).

The listener is the standard library's ``ThreadingHTTPServer`` on a daemon
thread rather than prometheus_client's ``start_http_server``: that one answers
every path with the metrics and has no place for ``/healthz``, and the WSGI
variant would need the same wrapping. It binds ``health.host`` (127.0.0.1 by
default) and has no authentication: expose it beyond the Pi only on a network
you trust (docs/deploy.md, Health). A port already taken is logged as an error
and the station runs on without it: the door matters more than its metrics.

``/healthz``: 200 while the frame loop took a frame within
``health.stale_after_s`` seconds, 503 otherwise (starting, camera stalled, or
the loop hung). The broker is reported but does not make it fail: the door
works offline, and entries wait in the outbox.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from edge import __version__
from edge.config import HealthConfig
from models.messages import Decision, EventKind

if TYPE_CHECKING:
    from edge.agent import EdgeAgent

log = logging.getLogger(__name__)

# Door events other than face and QR decisions, counted by the agent under these names.
_DOOR_EVENTS = (EventKind.EXIT_REQUEST, EventKind.FORCED_OPEN, EventKind.HELD_OPEN, EventKind.TAMPER)

Report = Callable[[], tuple[bool, dict[str, Any]]]
"""What /healthz answers: (healthy, JSON body)."""


class EdgeMetrics:
    """One agent's metrics, in a registry of its own (several agents can share a process in tests)."""

    def __init__(self, agent: "EdgeAgent") -> None:
        self.agent = agent
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "waystation_edge_decisions",
            "Door decisions acted on, by decision (granted, denied, spoof) and kind (face, qr)",
            ["decision", "kind"],
            registry=self.registry,
        )
        for decision in (Decision.GRANTED, Decision.DENIED, Decision.SPOOF):  # present at 0 from the start
            for kind in (EventKind.FACE, EventKind.QR):
                self.decisions.labels(decision.value, kind.value)
        ProcessCollector(registry=self.registry)  # process_* : memory, CPU, open files of the agent
        self.registry.register(_AgentCollector(agent))

    def decided(self, kind: EventKind, decision: Decision) -> None:
        self.decisions.labels(decision.value, kind.value).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def health_report(agent: "EdgeAgent", stale_after_s: float) -> tuple[bool, dict[str, Any]]:
    """(healthy, body) for /healthz: healthy while frames keep coming."""
    age = agent.last_frame_age_s
    if age is None:
        camera, ok = "starting", False
    else:
        ok = age < stale_after_s
        camera = "ok" if ok else "stalled"
    sync = agent.sync
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "camera": camera,
        "last_frame_age_s": None if age is None else round(age, 3),
        "mqtt": "connected" if sync is not None and sync.link.connected else "disconnected",
        "outbox_depth": agent.outbox_depth,
    }
    if not ok:
        body["problem"] = (
            "no frame yet" if age is None else f"no frame for {age:.0f} s (more than {stale_after_s:g} s)"
        )
    return ok, body


class _AgentCollector:
    """What the agent keeps anyway, read at scrape time (on the HTTP thread)."""

    def __init__(self, agent: "EdgeAgent") -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        counts = _snapshot(a.counts)
        source = a.source
        reader_dropped = getattr(source, "dropped", 0)
        inner = getattr(source, "source", source)  # LatestFrameReader wraps the (reopening) camera
        info = GaugeMetricFamily("waystation_edge_info", "The station and its agent version (value 1)",
                                 labels=["station", "version"])
        info.add_metric([a.settings.station_id, __version__], 1)
        yield info
        yield CounterMetricFamily(
            "waystation_edge_frames_read", "Frames the camera delivered (analysed or dropped as stale)",
            value=counts.get("frames", 0) + reader_dropped,
        )
        yield CounterMetricFamily(
            "waystation_edge_frames_analysed", "Frames the frame loop looked at (face search, QR, or a cheap "
            "idle check when the picture did not change)", value=counts.get("frames", 0),
        )
        steps = CounterMetricFamily(
            "waystation_edge_pipeline_steps", "Work done by the face pipeline, by step (full_searches, "
            "region_searches, encodings, idle_skips, ...; edge/pipeline.py)", labels=["step"],
        )
        if a.pipeline is not None:
            for step, n in sorted(_snapshot(a.pipeline.counts).items()):
                steps.add_metric([step], n)
        yield steps
        doors = CounterMetricFamily("waystation_edge_door_events", "Door input events, by kind", labels=["kind"])
        for kind in _DOOR_EVENTS:
            doors.add_metric([kind.value], counts.get(kind.value, 0))
        yield doors
        yield CounterMetricFamily("waystation_edge_liveness_prompts", "'Please move' prompts given to matched faces "
                                  "held for liveness (edge/decisions.py)", value=counts.get("liveness_prompts", 0))
        yield CounterMetricFamily(
            "waystation_edge_camera_reopens", "Times the camera was reopened after failing or stalling",
            value=getattr(inner, "reopens", 0),
        )
        age = a.last_frame_age_s
        stale_after = a.settings.health.stale_after_s
        yield GaugeMetricFamily(
            "waystation_edge_camera_up", f"1 while the frame loop took a frame within {stale_after:g} s",
            value=1 if age is not None and age < stale_after else 0,
        )
        if age is not None:
            yield GaugeMetricFamily(
                "waystation_edge_last_frame_age_seconds", "Seconds since the frame loop took its last frame", value=age
            )
        sync = a.sync
        yield GaugeMetricFamily(
            "waystation_edge_mqtt_connected", "1 while connected to the broker",
            value=1 if sync is not None and sync.link.connected else 0,
        )
        gallery = a.holder.gallery
        yield GaugeMetricFamily("waystation_edge_gallery_version", "Gallery version held", value=gallery.version)
        yield GaugeMetricFamily("waystation_edge_gallery_workers", "Workers who can be matched",
                                value=len(gallery.identities))
        store = a.store
        if store is not None:
            yield GaugeMetricFamily(
                "waystation_edge_outbox_depth", "Entry events waiting in the outbox for the broker", value=store.depth()
            )
            yield GaugeMetricFamily("waystation_edge_outbox_bytes", "Disk the queued events take",
                                    value=store.outbox_bytes)
            if store.outbox_limit_bytes is not None:
                yield GaugeMetricFamily("waystation_edge_outbox_limit_bytes", "The outbox's disk budget",
                                        value=store.outbox_limit_bytes)
        if sync is not None:
            yield CounterMetricFamily(
                "waystation_edge_outbox_refused", "Entry events not queued because the outbox was full (logged)",
                value=sync.stats.outbox_refused,
            )


def _snapshot(counter: dict[str, int]) -> dict[str, int]:
    """A copy of a Counter another thread increments (a resize during the copy is retried)."""
    for _ in range(5):
        try:
            return dict(counter)
        except RuntimeError:
            continue
    return {}


class HealthServer:
    """``/metrics`` and ``/healthz`` on a ThreadingHTTPServer in a daemon thread."""

    def __init__(self, config: HealthConfig, metrics: EdgeMetrics, report: Report) -> None:
        handler = _handler(metrics, report)
        server_class = _V6Server if ":" in config.host else ThreadingHTTPServer
        self._server = server_class((config.host, config.port), handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        log.info("health and metrics at http://%s:%d/healthz and /metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_health(config: HealthConfig, metrics: EdgeMetrics, report: Report) -> HealthServer | None:
    """Start the listener if enabled; None when disabled or the address cannot be bound (logged)."""
    if not config.enabled:
        return None
    try:
        return HealthServer(config, metrics, report).start()
    except OSError as err:
        log.error("health and metrics listener not started: cannot listen on %s:%d: %s (the door works on)",
                  config.host, config.port, err.strerror or err)
        return None


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(metrics: EdgeMetrics, report: Report) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "waystation-edge"

        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.render(self.headers.get("Accept"))
                self._send(200, body, content_type)
            elif path == "/healthz":
                ok, data = report()
                self._send(200 if ok else 503, json.dumps(data).encode(), "application/json")
            else:
                self._send(404, b"not found: try /healthz or /metrics\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
            log.debug("health http: " + format, *args)  # not the journal at every scrape

    return Handler
