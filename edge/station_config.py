"""The server's settings for this station (access mode, opening hours) arriving, checked, kept and applied.

The server publishes a retained :class:`~models.station_config.StationConfig`
on ``ws/v1/station/{sid}/config`` (models/station_config.py). The station

- decodes it with the contract's validation: a malformed or hostile payload,
  or one naming another station, is logged on one line and counted
  (``stats.malformed``) and changes nothing; when it still names this station
  and a version newer than the one in use (a config from a newer server that
  this station's code cannot read, such as a syntax of opening hours it does
  not know), it is answered as refused, so the admin page says so instead
  of waiting;
- ignores a config older than the one it applied (``stats.older``), answering
  so, so the admin page shows why;
- refuses a mode that reads QR codes when its own file has no
  ``access.qr_public_keys``: logged as an error, answered, the station keeps
  the mode it had (``stats.refused``);
- otherwise keeps it in edge.db before using it, so it survives a restart and
  holds while the broker is unreachable, and answers with a retained
  :class:`~models.station_config.StationConfigAck`.

Until a config has arrived, the station uses ``access.mode`` from its own
file and is always open. The frame loop reads :attr:`StationConfigApplier.mode`
and :meth:`StationConfigApplier.closed_reason` (a reference swap, no lock);
the agent applies them (edge/decisions.py): outside the opening hours faces and
QR codes are refused with the reason and recorded, the exit button still opens.

MQTT handlers run on paho's thread, so payloads are handed to one worker thread.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable

from core.mqtt import MqttLink
from edge.config import AccessConfig
from edge.errors import StoreError
from edge.policy import Verdict
from edge.store import EdgeStore
from models import topics
from models.errors import ContractError
from models.messages import Decision, decode, encode
from models.station_config import QR_MODES, StationConfig, StationConfigAck

log = logging.getLogger(__name__)

PREVIEW_CHARS = 200


@dataclass
class ConfigStats:
    applied: int = 0
    unchanged: int = 0
    older: int = 0
    refused: int = 0
    malformed: int = 0
    withdrawn: int = 0
    acks_sent: int = 0


class StationConfigApplier:
    """Holds the station config in use; see the module docstring."""

    def __init__(
        self,
        station_id: str,
        store: EdgeStore,
        access: AccessConfig,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.station_id = station_id
        self.store = store
        self.file_mode = access.mode
        self.has_qr_keys = bool(access.qr_public_keys)
        self.wall_clock = wall_clock
        self.stats = ConfigStats()
        self.active: StationConfig | None = None
        """The config in use; None: the station's own file (``access.mode``, always open)."""
        self.last_ack: StationConfigAck | None = None
        self._link: MqttLink | None = None
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- what the door uses -------------------------------------------------------------
    @property
    def mode(self) -> str:
        active = self.active
        return active.mode if active is not None else self.file_mode

    @property
    def version(self) -> int | None:
        active = self.active
        return active.version if active is not None else None

    def closed_reason(self, when: datetime | None = None) -> str | None:
        """None while the station is open (always, without a config); else why an attempt is refused."""
        active = self.active
        if active is None:
            return None
        return active.closed_reason(when or self.wall_clock())

    # -- start-up -------------------------------------------------------------------------
    def load(self) -> None:
        """Use the config kept in edge.db, if any (checked again: the file may be older than this code)."""
        try:
            kept = self.store.station_config()
        except StoreError as err:
            log.error("station config: cannot read the kept one (%s); using station.yaml until one arrives", err)
            return
        if kept is None:
            log.info("station config: none received yet; mode %s from station.yaml, always open", self.file_mode)
            return
        try:
            config = decode(kept[1].encode("utf-8"), StationConfig)
        except ContractError as err:
            log.error("station config: the kept one is not valid (%s); using station.yaml until one arrives", err)
            return
        problem = self._problem(config)
        if problem:
            log.error("station config v%d kept in edge.db not used: %s", config.version, problem)
            return
        self.active = config
        log.info("station config v%d from edge.db: mode %s, opening hours %s (%s)", config.version, config.mode,
                 config.opening_hours, config.time_zone)

    def attach(self, link: MqttLink) -> None:
        """Subscribe to this station's config (before ``link.start()``) and start the worker thread."""
        self._link = link
        link.subscribe(topics.station_config(self.station_id), lambda _t, p: self._inbox.put(("config", p)))
        link.on_connected(lambda: self._inbox.put(("connected", b"")))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="station-config", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            kind, payload = item
            try:
                ack = self.offer(payload) if kind == "config" else self.last_ack
                if ack is not None:
                    self._send(ack)
            except Exception:  # a bug must not end the thread: the next config is handled still
                log.exception("station config: handling a %s message failed", kind)

    # -- one config ---------------------------------------------------------------------
    def offer(self, payload: bytes) -> StationConfigAck | None:
        """Check a received payload and apply it if it may be; the answer to send, or None for none."""
        if not payload:  # the server cleared the retained copy: the station was removed there
            self.stats.withdrawn += 1
            log.warning("station config withdrawn by the server; keeping v%s", self.version)
            return None
        try:
            config = decode(payload, StationConfig)
        except ContractError as err:
            return self._unreadable(payload, str(err))
        if config.station_id != self.station_id:
            return self._malformed(payload, f"it names station {config.station_id!r}")
        active = self.active
        if active is not None and config.version < active.version:
            self.stats.older += 1
            log.warning("station config v%d ignored: older than v%d in use", config.version, active.version)
            return self._ack(config.version, False, f"older than v{active.version}, which this station uses")
        if active is not None and config == active:
            self.stats.unchanged += 1
            return self._ack(config.version, True, "")
        problem = self._problem(config)
        if problem:
            self.stats.refused += 1
            log.error("station config v%d refused: %s; keeping mode %s", config.version, problem, self.mode)
            return self._ack(config.version, False, problem)
        try:
            self.store.save_station_config(config.version, encode(config).decode("utf-8"))
        except StoreError as err:  # the door still follows the server; it is lost on a restart
            log.error("station config v%d applied but not kept (edge.db: %s)", config.version, err)
        self.active = config
        self.stats.applied += 1
        log.info("station config v%d applied: mode %s, opening hours %s (%s)", config.version, config.mode,
                 config.opening_hours, config.time_zone)
        return self._ack(config.version, True, "")

    def _problem(self, config: StationConfig) -> str:
        if config.mode in QR_MODES and not self.has_qr_keys:
            return f"mode {config.mode} needs the server's QR public key in access.qr_public_keys of station.yaml"
        return ""

    def _malformed(self, payload: bytes, why: str) -> None:
        self.stats.malformed += 1
        preview = payload[:PREVIEW_CHARS].decode("utf-8", "backslashreplace")
        log.warning("station config refused (%d bytes): %s | %r", len(payload), _one_line(why[:PREVIEW_CHARS]),
                    preview)
        return None

    def _unreadable(self, payload: bytes, why: str) -> StationConfigAck | None:
        """A payload the contract refused: nothing changes; answered as refused if it is a newer config for us."""
        self._malformed(payload, why)
        version = _addressed_version(payload, self.station_id)
        if version is None or (self.version is not None and version <= self.version):
            return None
        self.stats.refused += 1
        return self._ack(version, False, f"this station cannot read it (is its software older than the server's?): {why}")

    def _ack(self, version: int, applied: bool, reason: str) -> StationConfigAck:
        ack = StationConfigAck(
            station_id=self.station_id, version=version, applied=applied, active_version=self.version,
            mode=self.mode, reason=reason[:200], at=self.wall_clock(),
        )
        self.last_ack = ack
        return ack

    def _send(self, ack: StationConfigAck) -> None:
        link = self._link
        if link is not None and link.publish(topics.station_config_ack(self.station_id), encode(ack), retain=True):
            self.stats.acks_sent += 1


def _addressed_version(payload: bytes, station_id: str) -> int | None:
    """The version of a config the contract refused, if it is a JSON object naming this station; else None."""
    if len(payload) > 64 * 1024:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(doc, dict) or doc.get("station_id") != station_id:
        return None
    version = doc.get("version")
    return version if type(version) is int and 0 <= version <= 2**62 else None


def _one_line(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def refuse_when_closed(verdict: Verdict, reason: str) -> Verdict:
    """A grant turned into the denial the door gives outside the opening hours (recorded as the grant would be)."""
    return replace(verdict, decision=Decision.DENIED, open_door=False, reason=reason[:200])
