"""Fixtures shared by all tests: real brokers, the shared face data, the dlib models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from core.broker import EmbeddedBroker
from tests.support.browser import browser, playwright, web  # noqa: F401 - fixtures for the real-browser tests
from tests.support.services import Mosquitto, faces_dir

# The agents of the tests encode in their own process whatever the machine's cores (detection.encoder_processes
# is "auto" in the shipped config): tests/edge/test_encoders.py runs the worker processes on purpose.
os.environ.setdefault("WAYSTATION_EDGE_DETECTION__ENCODER_PROCESSES", "0")


@pytest.fixture(scope="session")
def faces() -> Path:
    """Root of the shared face data (../shared/data/faces or WAYSTATION_FACES_DIR)."""
    return faces_dir()


@pytest.fixture(scope="session")
def face_engine():  # noqa: ANN201
    from core.faces import FaceEngine

    return FaceEngine().load()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto process on a free loopback port, stopped after the test."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def embedded_broker() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["mosquitto", "embedded"])
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(host, port) of a running broker: once Debian's mosquitto, once the embedded one."""
    if request.param == "mosquitto":
        m = Mosquitto(tmp_path / "mosquitto").start()
        try:
            yield (m.host, m.port)
        finally:
            m.stop()
    else:
        b = EmbeddedBroker().start()
        try:
            yield (b.host, b.port)
        finally:
            b.stop()
