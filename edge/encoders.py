"""Face encodings computed in worker processes, so that a multi-core station votes in parallel.

One dlib encoding (the 128-d ResNet) is the most expensive step of the door
path: about 110 ms on a core of the development machine and an estimated
0.55-0.75 s on a Raspberry Pi 4 core. A grant rests on ``frames_required``
(3) encodings of different frames; done one after the other they make a Pi 4
worker wait 2-2.5 s. dlib holds Python's GIL while it encodes (two threads
take longer than one), so the other cores are reached with processes: an
:class:`EncoderPool` of ``detection.encoder_processes`` workers, each a
process of about 100 MB with the two models an encoding needs
(core.faces.FaceEncoder), fed with a crop around the face, not the whole frame.

The crop is the face box with :data:`CROP_MARGIN` face sizes around it,
clipped to the frame: more than the 5-point alignment and the face chip
(25 % padding) ever read, so the encoding is the one the whole frame gives
(tested). The pool never blocks the frame loop: :meth:`EncoderPool.submit`
returns a :class:`~concurrent.futures.Future`, and edge/pipeline.py collects
finished ones on later frames. A worker that dies (killed, out of memory)
breaks the pool: submissions then raise :class:`EncoderUnavailable`, the
pipeline encodes in its own process, and the pool is started again after
``restart_after_s``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import numpy as np

from core.faces import Box, FaceEncoder

log = logging.getLogger(__name__)

CROP_MARGIN = 0.6
"""Face sizes of picture kept on each side of the box; the chip and the alignment read less."""

_engine: FaceEncoder | None = None  # in each worker process: the two models an encoding needs


class EncoderUnavailable(RuntimeError):
    """The pool is starting again after a worker died: encode in this process meanwhile."""


def crop_for_encoding(rgb: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The part of the frame an encoding of ``box`` reads, and the box in the crop's pixels."""
    h, w = rgb.shape[:2]
    m = int(np.ceil(CROP_MARGIN * max(box.height, box.width)))
    top, left = max(0, box.top - m), max(0, box.left - m)
    bottom, right = min(h, box.bottom + m), min(w, box.right + m)
    crop = np.ascontiguousarray(rgb[top:bottom, left:right])
    return crop, Box(box.top - top, box.right - left, box.bottom - top, box.left - left)


def _start_worker() -> None:
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the agent's to handle; it stops the pool
    _engine = FaceEncoder().load()


def _encode(crop: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    assert _engine is not None, "worker started without its models"
    return _engine.encode(crop, [Box(*box)])[0]


def auto_processes(setting: int | str, cpus: int | None = None) -> int:
    """The number of workers for ``detection.encoder_processes`` (a number, or ``auto``).

    Automatic: one core is the frame loop's (camera, detection, landmarks,
    sync), up to three of the others encode (three are as many votes as a
    grant needs); a station with fewer than three cores encodes in its own process.
    """
    if setting != "auto":
        return int(setting)
    n = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return min(3, n - 1) if n >= 3 else 0


class EncoderPool:
    """``processes`` workers with the dlib models loaded; encodings by :meth:`submit`."""

    def __init__(self, processes: int, *, restart_after_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if processes < 1:
            raise ValueError("an encoder pool needs at least one process")
        self.processes = processes
        self.restart_after_s = restart_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._broken_at: float | None = None
        self.restarts = 0

    def start(self, wait: bool = True) -> "EncoderPool":
        """Start the workers; with ``wait``, until each has its models loaded (a few seconds)."""
        with self._lock:
            self._executor = executor = self._new_executor()
        if wait:
            tiny = np.zeros((8, 8, 3), dtype=np.uint8)
            try:
                for f in [executor.submit(_encode, tiny, (0, 8, 8, 0)) for _ in range(self.processes)]:
                    f.result(timeout=120)
            except BaseException:
                self.close()
                raise
        log.info("encoding in %d worker process(es)", self.processes)
        return self

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: a clean process, not a fork of one whose MQTT and camera threads hold locks.
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker)

    @property
    def pids(self) -> list[int]:
        ex = self._executor
        return sorted(p.pid for p in (ex._processes or {}).values() if p.pid) if ex is not None else []

    def submit(self, rgb: np.ndarray, box: Box) -> "Future[np.ndarray]":
        """The encoding of ``box`` in ``rgb``, computed by a worker; EncoderUnavailable while restarting."""
        crop, inner = crop_for_encoding(rgb, box)
        with self._lock:
            if self._broken_at is not None:
                if self._clock() - self._broken_at < self.restart_after_s:
                    raise EncoderUnavailable("encoder processes restarting")
                log.warning("starting the encoder processes again")
                self._executor = self._new_executor()
                self._broken_at = None
                self.restarts += 1
            if self._executor is None:  # not started, or closed while the frame loop still ran
                raise EncoderUnavailable("encoder processes not running")
            try:
                return self._executor.submit(_encode, crop, inner.as_css())
            except (BrokenProcessPool, RuntimeError) as err:
                self._broke(err)
                raise EncoderUnavailable(str(err)) from err

    def failed(self, err: BaseException) -> None:
        """A submitted encoding failed. A worker that died breaks the pool: encode in-process until it is
        started again. Any other error (dlib refusing one crop) is that encoding's alone."""
        if not isinstance(err, BrokenProcessPool):
            log.warning("an encoding in an encoder process failed: %s", err)
            return
        with self._lock:
            if self._broken_at is None:
                self._broke(err)

    def _broke(self, err: BaseException) -> None:
        log.error("encoder processes failed (%s): encoding in the agent's process for %.0f s", err,
                  self.restart_after_s)
        self._broken_at = self._clock()
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
