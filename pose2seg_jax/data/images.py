"""Image decoding with PIL into RGB uint8, following what OpenCV's ``imread`` gives the reference.

The reference reads images with ``cv2.imread(path)`` (colour, 8 bit): grayscale is replicated to
three channels, an alpha channel is dropped (not composited), palette images are expanded and
16-bit samples keep their high byte. We do the same with PIL, so every decoded image is
``(H, W, 3)`` uint8 in RGB order.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(Exception):
    """A file that is missing, unreadable or not a decodable JPEG/PNG; the message names it."""


def _to_rgb_uint8(img: Image.Image, where: str) -> np.ndarray:
    """Converts a PIL image of any common mode to ``(H, W, 3)`` uint8 RGB."""
    mode = img.mode
    if mode in ("RGB", "L"):
        arr = np.asarray(img)
    elif mode in ("RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(img.convert("RGB"))
    elif mode in ("LA", "La"):
        arr = np.asarray(img)[..., 0]
    elif mode in ("P", "PA"):
        arr = np.asarray(
            img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
        )
        arr = arr[..., :3]
    elif mode == "1":
        arr = np.asarray(img, dtype=np.uint8) * np.uint8(255)
    elif mode.startswith("I;16") or mode == "I":
        # 16-bit PNGs open as "I;16*" or "I"; keep the high byte like OpenCV's 8-bit read.
        wide = np.asarray(img).astype(np.int64)
        arr = np.clip(wide >> 8, 0, 255).astype(np.uint8)
    elif mode == "F":
        arr = np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8)
    else:
        try:
            arr = np.asarray(img.convert("RGB"))
        except (ValueError, OSError) as err:
            raise ImageDecodeError(f"{where}: unsupported image mode {mode!r}") from err
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"{where}: decoded to {arr.dtype}, expected uint8 (mode {mode!r})")
    return np.ascontiguousarray(arr)


def decode_image(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decodes an encoded JPEG/PNG (or any format PIL reads) to RGB uint8.

    Args:
      data: the encoded file contents.
      name: how to name the image in error messages (its file name).

    Returns:
      ``(H, W, 3)`` uint8 RGB.

    Raises:
      ImageDecodeError: the bytes are not a decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_rgb_uint8(img, name)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(
            f"{name}: cannot decode image ({type(err).__name__}: {err}); "
            "replace the file or drop it from the annotation file"
        ) from err


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads and decodes an image file to RGB uint8.

    Args:
      path: the image file.

    Returns:
      ``(H, W, 3)`` uint8 RGB.

    Raises:
      ImageDecodeError: the file is missing, unreadable or not a decodable image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageDecodeError(
            f"{path}: cannot read image file ({err.strerror or err}); check the image directory"
        ) from err
    return decode_image(data, name=str(path))


def encode_png(image: np.ndarray) -> bytes:
    """Encodes ``(H, W, 3)`` uint8 RGB as PNG bytes (lossless; used by tests and the generator)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encodes ``(H, W, 3)`` uint8 RGB as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
