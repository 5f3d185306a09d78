"""Fault tests: real mosquitto, server and station processes, killed and restarted on purpose."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a fault test that takes tens of seconds (still run in CI)")
