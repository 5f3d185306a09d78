"""systemd notifications: READY=1, the watchdog ping WATCHDOG=1, STOPPING=1 (no dependency).

Under ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET``
(a path, or an abstract socket when it starts with ``@``) and, with
``WatchdogSec=``, the period in ``$WATCHDOG_USEC``. The protocol is one plain
text datagram per state, which is all sd_notify(3) does; python-systemd would
need libsystemd compiled on the Pi and the ``sdnotify`` package on PyPI is
unmaintained, so these few lines are ours. Without ``$NOTIFY_SOCKET`` (not
started by systemd, tests, a laptop) every call is a no-op.

The watchdog restarts a *hung camera loop* (a libcamera or V4L2 read that never
returns), the one failure the agent cannot recover from by itself. So the ping
comes from the frame loop, after each frame (``frame_done``), never from a
timer thread, which would keep pinging while the loop hangs. It is sent at most
every ``WATCHDOG_USEC / 2`` (systemd's advice). While no frame arrives no ping
is sent, and systemd kills the process (SIGABRT) within ``WatchdogSec``; the
relay is released when the process dies (fail-secure) and systemd starts it
again with a fresh camera handle.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify_address(environ: Mapping[str, str] = os.environ) -> str | None:
    """Where systemd listens, or None when not started by systemd with Type=notify."""
    path = environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half of WatchdogSec (how often to ping), or None when the watchdog is off or meant for another process."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


class Watchdog:
    """The agent's link to systemd: ``ready()``, ``frame_done()`` on each frame, ``stopping()``."""

    def __init__(self, environ: Mapping[str, str] = os.environ, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.address = notify_address(environ)
        self._where = environ.get("NOTIFY_SOCKET", "")
        self.interval_s = watchdog_interval_s(environ) if self.address else None
        self.clock = clock
        self.pings = 0
        self._last_ping: float | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state ("READY=1", "STATUS=...") to systemd; False when not under systemd or it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), self.address)
        except OSError as err:
            if not self._failed:  # logged once: the door must not be slowed by a log line per frame
                log.warning("cannot notify systemd at %s: %s", self._where, err)
                self._failed = True
            return False
        return True

    def ready(self) -> None:
        """Start-up is over (store, pins, models, sync, camera): systemd counts the service as started."""
        if self.interval_s is not None:
            # systemd kills a hung agent with SIGABRT: faulthandler then prints every thread's stack to the
            # journal, which shows where the loop hung.
            if not faulthandler.is_enabled():
                with contextlib.suppress(ValueError, OSError, AttributeError):  # stderr without a file descriptor
                    faulthandler.enable()
            log.info("systemd watchdog on: a ping at most every %.1f s while frames are processed", self.interval_s)
        self.notify("READY=1")
        self._last_ping = self.clock()

    def frame_done(self) -> None:
        """On the frame loop, after each frame: ping when the last ping is half a watchdog period old."""
        if self.interval_s is None:
            return
        now = self.clock()
        if self._last_ping is None or now - self._last_ping >= self.interval_s:
            self._last_ping = now
            if self.notify("WATCHDOG=1"):
                self.pings += 1

    def stopping(self) -> None:
        """SIGTERM or SIGINT arrived: systemd waits for the exit instead of counting it as a failure."""
        self.notify("STOPPING=1")
