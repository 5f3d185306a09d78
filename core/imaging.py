"""Pixels in and out: the only module that imports OpenCV (cv2) and Pillow.

Images are handed around as RGB ``uint8`` arrays of shape (H, W, 3), the form
dlib wants. Everything that can go wrong with a file from the outside world
(truncated, not an image, a decompression bomb, alpha, 16-bit, grayscale, EXIF
rotation) is dealt with here and reported as :class:`ImageError`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Refuse images larger than this (about 7,300 x 5,500): a phone photo is ~12 MP."""

MAX_FILE_BYTES = 30 * 1024 * 1024

# Pillow refuses (DecompressionBombError) at twice this and warns above it; the
# warning is turned into an error in load_image.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class ImageError(ValueError):
    """An image could not be used; the message says why in plain words."""


def load_image(source: str | os.PathLike[str] | bytes) -> np.ndarray:
    """Decode a photo (path or bytes) into an upright RGB uint8 array.

    EXIF rotation is applied (face_recognition's own loader ignores it), an
    alpha channel is composited on white, grayscale and 16-bit images are
    converted. Raises ImageError for anything that is not a usable image.
    """
    name = "the upload" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as err:
            raise ImageError(f"cannot read {name}: {err.strerror or err}") from err
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name} is {size / 1e6:.0f} MB; photos larger than {MAX_FILE_BYTES // 2**20} MB are refused")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name} is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB")
    # face_recognition sets this global to True when it is imported, which
    # makes a truncated upload decode "successfully" with its lower part grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{name} is {img.width}x{img.height} pixels; the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb_array(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{name} is too large to decode safely: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{name} is not an image file Waystation can read (JPEG, PNG, BMP, WebP)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name} is damaged or truncated: {err}") from err


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0
        arr = (arr / (hi if hi > 0 else 1) * 255.0).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([arr] * 3, axis=-1))
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frames are BGR; dlib wants a contiguous RGB array (not a slicing view)."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def rgb_to_bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Scale an image by a factor (area interpolation when shrinking)."""
    if scale == 1.0:
        return image
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (0, 0), fx=scale, fy=scale, interpolation=interp)


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so that the longer side is at most max_side; returns (image, scale)."""
    h, w = image.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    return resize(image, scale), scale


def flip_horizontal(image: np.ndarray) -> np.ndarray:
    """The mirror image (left and right swapped), as a contiguous array."""
    return np.ascontiguousarray(image[:, ::-1])


def scale_brightness(image: np.ndarray, gain: float) -> np.ndarray:
    """Every pixel value multiplied by ``gain`` (0.7 = darker, 1.3 = brighter), clipped to 0-255."""
    if gain < 0:
        raise ValueError("gain must not be negative")
    return np.clip(image.astype(np.float32) * np.float32(gain), 0, 255).astype(np.uint8)


def camera_frame(photo: np.ndarray, width: int = 640, height: int = 480, background: int = 96) -> np.ndarray:
    """A photo shown to a camera: scaled to fill the frame's height (or width), as if
    the person stood at the door, centred on a plain grey background."""
    h, w = photo.shape[:2]
    scaled = resize(photo, min(height / h, width / w))
    sh, sw = scaled.shape[:2]
    frame = np.full((height, width, 3), background, dtype=np.uint8)
    top, left = (height - sh) // 2, (width - sw) // 2
    frame[top : top + sh, left : left + sw] = scaled
    return frame


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: low means blurred."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb_to_bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("could not encode JPEG")
    return buf.tobytes()


def face_jpeg(
    rgb: np.ndarray,
    box: tuple[int, int, int, int],
    *,
    margin: float = 0.4,
    max_side: int = 160,
    quality: int = 80,
    max_bytes: int | None = None,
) -> bytes:
    """A JPEG of one face: ``box`` (top, right, bottom, left) grown by ``margin`` of its size on every side,
    clipped to the image, shrunk to at most ``max_side`` pixels on its longer side.

    Never more than the face's surroundings: the crop is a copy, the frame is not kept. With
    ``max_bytes``, the quality is lowered step by step (down to 30) until the JPEG fits; ImageError
    if even that does not fit, or the box lies outside the image.
    """
    h, w = rgb.shape[:2]
    top, right, bottom, left = box
    grow_y, grow_x = int((bottom - top) * margin), int((right - left) * margin)
    y0, y1 = max(0, top - grow_y), min(h, bottom + grow_y)
    x0, x1 = max(0, left - grow_x), min(w, right + grow_x)
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise ImageError(f"the face box {box} lies outside the {w}x{h} image")
    crop, _scale = fit_within(np.ascontiguousarray(rgb[y0:y1, x0:x1]), max_side)
    for q in range(quality, 29, -10) if max_bytes is not None else (quality,):
        data = encode_jpeg(crop, q)
        if max_bytes is None or len(data) <= max_bytes:
            return data
    raise ImageError(f"a {crop.shape[1]}x{crop.shape[0]} face does not fit in {max_bytes} bytes even at quality 30")


def detect_qr(rgb: np.ndarray) -> list[str]:
    """The texts of the QR codes readable in an RGB frame (empty when none).

    Uses OpenCV's ArUco-based QR detector, which found rotated, tilted and
    small codes far more often than the classic ``QRCodeDetector`` on real
    frames (see docs/hardware.md for the smallest size read). A detector is
    made per call (microseconds): they are not safe to share across threads.
    """
    gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    found, texts, _points, _straight = cv2.QRCodeDetectorAruco().detectAndDecodeMulti(gray)
    if not found:
        return []
    return [t for t in texts if t]


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder in name order (the order of an image-folder camera)."""
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in exts and p.is_file())


class Capture:
    """A cv2.VideoCapture for a device index, a stream URL or a video file.

    ``read()`` returns an RGB frame or None when no frame came (end of file,
    a dropped camera); the caller decides whether to reopen.
    """

    def __init__(self, source: int | str, *, width: int | None = None, height: int | None = None) -> None:
        self.source = source
        self._cap: Any = cv2.VideoCapture(source)
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    @property
    def opened(self) -> bool:
        return bool(self._cap.isOpened())

    @property
    def fps(self) -> float:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if 0.0 < fps < 1000.0 else 0.0

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        return bgr_to_rgb(frame)

    def release(self) -> None:
        self._cap.release()
