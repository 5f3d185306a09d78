"""The matcher's current gallery, swapped atomically by sync and read by the frame pipeline.

A Gallery is immutable; updating means building a new one and replacing the
reference. The pair (gallery, display names) is one tuple so a reader never
sees the names of one version with the encodings of another.
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping

from core.matcher import Gallery


class GalleryHolder:
    def __init__(self, gallery: Gallery | None = None, names: Mapping[str, str] | None = None) -> None:
        self._current: tuple[Gallery, dict[str, str]] = (gallery or Gallery(), dict(names or {}))
        self._changed = threading.Condition()

    @property
    def gallery(self) -> Gallery:
        return self._current[0]

    @property
    def names(self) -> dict[str, str]:
        return self._current[1]

    @property
    def current(self) -> tuple[Gallery, dict[str, str]]:
        return self._current

    def swap(self, gallery: Gallery, names: Mapping[str, str]) -> None:
        with self._changed:
            self._current = (gallery, dict(names))  # one reference assignment: atomic for readers
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Gallery], bool], timeout: float) -> bool:
        """Block until predicate(gallery) holds (True) or the timeout passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._current[0]), timeout)
