"""Errors of the edge agent: one root, each class also a builtin.

::

    EdgeError
     ├── ConfigError (ValueError)      -- the settings file or environment is invalid; exit 2
     ├── CameraError (OSError)         -- the camera source is missing or cannot be read
     ├── DoorError (RuntimeError)      -- the GPIO pins cannot be claimed
     └── StoreError (RuntimeError)     -- the edge database cannot be opened or used
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error the edge agent raises on purpose."""


class ConfigError(EdgeError, ValueError):
    """Invalid settings. ``problems`` holds one ``key path: value: problem`` line per error."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems) or ["(settings): invalid"]
        super().__init__("; ".join(self.problems))

    def lines(self) -> list[str]:
        """The form printed by ``python -m edge check-config``."""
        return [f"ConfigError: {p}" for p in self.problems]


class CameraError(EdgeError, OSError):
    """The camera source does not exist or cannot be opened."""


class DoorError(EdgeError, RuntimeError):
    """The door's GPIO pins cannot be used."""


class StoreError(EdgeError, RuntimeError):
    """The edge's SQLite file cannot be opened or written."""
