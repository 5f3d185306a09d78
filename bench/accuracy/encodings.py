"""The real dlib pipeline on the shared photos, with every result cached in one .npz file.

A ``Variant`` says how a photo becomes encodings (detector upsampling, landmark
model, jitters, an altered copy from core.templates.augment, a smaller size);
the cache key is the variant's key and the file, so a rerun recomputes nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.accuracy.rules import centre_face, largest_face
from core.templates import AUGMENTATIONS, augment

CACHE_VERSION = "1|dlib_resnet_v1"  # bump when the pipeline behind a cached Variant changes
ENROLL_AUGS = AUGMENTATIONS
PROBE_FRAMES = ("orig", "crop94_tl", "gain85", "crop94_br", "lowres70")


@dataclass(frozen=True)
class Variant:
    """How a photo is turned into encodings. reuse_box: encode only the centred face found by
    the base detection (isolates the encoder's knobs from the detector's)."""

    up: int = 1
    lm: str = "small"
    jit: int = 1
    aug: str = "orig"
    scale: int = 100
    reuse_box: bool = False

    def key(self) -> str:
        return f"u{self.up}-{self.lm}-j{self.jit}-{self.aug}-s{self.scale}-{'rb' if self.reuse_box else 'det'}"


BASE = Variant()


def progress(label: str, i: int, n: int) -> None:
    """One line on stderr, rewritten in place about 50 times (no tqdm)."""
    if i == n or i % max(1, n // 50) == 0:
        sys.stderr.write(f"\r{label}: {i}/{n}" + ("\n" if i == n else ""))
        sys.stderr.flush()


class EncodingCache:
    """Boxes, encodings and image size per (variant, file), saved as one .npz."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
        self._dirty = 0
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                if str(z["version"]) == CACHE_VERSION:
                    off = z["offsets"]
                    for i, key in enumerate(z["keys"]):
                        a, b = off[i], off[i + 1]
                        shape = (int(z["shapes"][i, 0]), int(z["shapes"][i, 1]))
                        self.items[str(key)] = (z["boxes"][a:b], z["encs"][a:b], shape)

    def save(self) -> None:
        if not self._dirty:
            return
        keys = list(self.items)
        sizes = [len(self.items[k][0]) for k in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp, version=np.array(CACHE_VERSION), keys=np.array(keys), offsets=np.concatenate([[0], np.cumsum(sizes)]),
            boxes=np.concatenate([self.items[k][0] for k in keys] + [np.empty((0, 4), np.int32)]),
            encs=np.concatenate([self.items[k][1] for k in keys] + [np.empty((0, 128), np.float32)]),
            shapes=np.array([self.items[k][2] for k in keys], dtype=np.int32).reshape(-1, 2),
        )
        tmp.replace(self.path)
        self._dirty = 0

    def put(self, key: str, value: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> None:
        self.items[key] = value
        self._dirty += 1
        if self._dirty >= 50:
            self.save()


class Encoder:
    """Runs (or recalls) the real dlib pipeline on the shared photos."""

    def __init__(self, faces: Path, cache: EncodingCache) -> None:
        from core.faces import FaceEngine

        self.faces = faces
        self.cache = cache
        self.engines = {lm: FaceEngine(landmarks=lm) for lm in ("small", "large")}  # type: ignore[arg-type]

    def image(self, rel: str) -> np.ndarray:
        from core.imaging import load_image

        return load_image(self.faces / rel)

    def _compute(self, rel: str, v: Variant) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        from core.faces import Box
        from core.imaging import resize

        engine = self.engines[v.lm]
        img = augment(self.image(rel), v.aug)
        if v.scale != 100:
            img = resize(img, v.scale / 100.0)
        if v.reuse_box:
            boxes_arr, _, (h, w) = self.get(rel, BASE)
            i = centre_face(boxes_arr, h, w)
            boxes = [] if i is None else [Box(*map(int, boxes_arr[i]))]
        else:
            boxes = engine.detect(img, upsample=v.up)
        encs = engine.encode(img, boxes, num_jitters=v.jit)
        arr = np.array([b.as_css() for b in boxes], dtype=np.int32).reshape(-1, 4)
        return arr, encs.astype(np.float32), (int(img.shape[0]), int(img.shape[1]))

    def get(self, rel: str, v: Variant = BASE) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        key = f"{v.key()}|{rel}"
        if key not in self.cache.items:
            self.cache.put(key, self._compute(rel, v))
        return self.cache.items[key]

    def face(self, rel: str, v: Variant = BASE, pick: str = "centre") -> np.ndarray | None:
        boxes, encs, (h, w) = self.get(rel, v)
        i = centre_face(boxes, h, w) if pick == "centre" else largest_face(boxes)
        return None if i is None else encs[i]

    def warm(self, label: str, jobs: Sequence[tuple[str, Variant]]) -> None:
        todo = [(r, v) for r, v in jobs if f"{v.key()}|{r}" not in self.cache.items]
        for i, (rel, v) in enumerate(todo, start=1):
            self.get(rel, v)
            progress(label, i, len(todo))
        self.cache.save()


TEMPLATE = (BASE,) + tuple(Variant(aug=a) for a in ENROLL_AUGS)
"""The recommended enrollment (core.templates): the mean of the photo and its augmentations."""
