"""An MQTT broker inside this process: the only module that imports amqtt.

For the demo and the tests that need no separate process. Production and the
fault tests use Debian's mosquitto (see deploy/mosquitto/). amqtt speaks MQTT
3.1.1 only (no shared subscriptions) and keeps persistent sessions in memory.
It listens on 127.0.0.1 unless told otherwise: amqtt's own default, 0.0.0.0,
would expose an anonymous broker to the station's network.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Runs amqtt on its own event loop in a daemon thread.

    >>> broker = EmbeddedBroker(port=0).start()   # port 0: pick a free one
    >>> broker.port
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 500}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def start(self, timeout: float = 10.0) -> "EmbeddedBroker":
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EmbeddedBrokerError(f"embedded MQTT broker did not start within {timeout} s")
        if self._error is not None:
            raise EmbeddedBrokerError(f"embedded MQTT broker failed to start on {self.host}:{self.port}: {self._error}")
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            self._broker = Broker(self._config(), loop=loop)
            loop.run_until_complete(self._broker.start())
        except BaseException as err:  # reported to start()
            self._error = err
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            fut.result(timeout)
        except Exception:
            log.warning("embedded broker did not shut down cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
