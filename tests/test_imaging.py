"""Decoding photos from the outside world: every bad file gets a clear error.

The broken files are made here from real photos of the shared data set.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.imaging import ImageError, load_image

pytestmark = pytest.mark.faces

OBAMA = "face_recognition_examples/obama/obama.jpg"


def test_a_jpeg_becomes_an_rgb_uint8_array(faces: Path) -> None:
    img = load_image(faces / OBAMA)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.flags["C_CONTIGUOUS"]


def test_bytes_and_paths_decode_the_same(faces: Path) -> None:
    path = faces / OBAMA
    np.testing.assert_array_equal(load_image(path), load_image(path.read_bytes()))


def test_rgba_png_is_composited_to_rgb(faces: Path) -> None:
    img = load_image(faces / "face_recognition_examples/obama/32bit.png")
    assert img.shape[2] == 3


def test_exif_rotation_is_applied(faces: Path) -> None:
    # Stored sideways with EXIF orientation 6: the decoded image must be upright (portrait).
    path = faces / "liveness/live/silentface_head_image_T1.jpg"
    with Image.open(path) as raw:
        assert raw.getexif().get(0x0112) == 6
        stored_w, stored_h = raw.size
    img = load_image(path)
    assert (img.shape[1], img.shape[0]) == (stored_h, stored_w)


def test_grayscale_and_16_bit_images_are_converted(faces: Path, tmp_path: Path) -> None:
    src = Image.open(faces / OBAMA)
    gray = tmp_path / "gray.png"
    src.convert("L").save(gray)
    deep = tmp_path / "deep.png"
    arr16 = (np.asarray(src.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr16).save(deep)
    for path in (gray, deep):
        img = load_image(path)
        assert img.shape[2] == 3 and img.dtype == np.uint8
        assert 50 < img.mean() < 200  # still a real picture, not black or white


def test_truncated_jpeg_is_refused(faces: Path, tmp_path: Path) -> None:
    from core.faces import _load_library

    _load_library()  # importing face_recognition flips Pillow to accept truncated files

    data = (faces / OBAMA).read_bytes()
    broken = tmp_path / "truncated.jpg"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(broken)


def test_non_image_and_empty_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    with pytest.raises(ImageError, match="not an image file"):
        load_image(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge grayscale image (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * width
    raw = zlib.compress(row * 16, 9)  # only a few rows of data: the size comes from the header
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    data = _png_bomb(30_000, 30_000)  # 900 megapixels claimed in a few hundred bytes
    assert len(data) < 10_000
    with pytest.raises(ImageError, match="too large|megapixels"):
        load_image(data)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:
        fh.truncate(31 * 1024 * 1024)
    with pytest.raises(ImageError, match="MB"):
        load_image(big)


def test_a_saved_png_round_trips(tmp_path: Path) -> None:
    arr = np.zeros((40, 60, 3), dtype=np.uint8)
    arr[:, :, 1] = 200
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    np.testing.assert_array_equal(load_image(buf.getvalue()), arr)
