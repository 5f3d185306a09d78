"""Exceptions of the central server.

One root, each also a builtin so callers that only know the builtin still work::

    ServerError (Exception)
     ├── ConfigError (ValueError)        -- settings invalid; CLI exits 2
     ├── NotFound (LookupError)          -- no such worker / station
     ├── Conflict (ValueError)           -- already exists (station id, phone number)
     └── StartupError (RuntimeError)     -- cannot listen, database unreachable
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of the server's own errors."""


class ConfigError(ServerError, ValueError):
    """The settings are invalid. ``problems`` holds ``(key, problem)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {problem}" for key, problem in problems))

    def lines(self) -> list[str]:
        """One ``ConfigError: key: problem`` line per problem, as the CLI prints them."""
        return [f"ConfigError: {key}: {problem}" for key, problem in self.problems]


class NotFound(ServerError, LookupError):
    """The worker or station does not exist."""


class Conflict(ServerError, ValueError):
    """The thing to create exists already."""


class StartupError(ServerError, RuntimeError):
    """The server could not start (port taken, database unreachable)."""
