"""Reading and writing single images: every reader in the package goes through here.

Images come back as float32 ``[h, w, 3]`` arrays in [0, 1]: grayscale is repeated to three
channels, alpha is dropped, 16-bit scales to [0, 1]. Decoding uses TensorFlow's decoders (PNG,
JPEG, BMP, GIF), the same that the exported SavedModel uses on encoded bytes. Images of more
than ``MAX_PIXELS`` pixels are refused from their header, before decoding: detection holds
several float copies of an image at its own size (about 8 GB for 8000 x 8000).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf

from ssad.errors import BadImageError
from ssad.files import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_IGNORED = {"thumbs.db", "desktop.ini"}
MAX_PIXELS = 40_000_000  # raise it to read larger images (memory grows with the pixel count)


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file with an image suffix (skips ``.DS_Store``, ``Thumbs.db``)."""
    p = Path(path)
    return (
        p.is_file()
        and not p.name.startswith(".")
        and p.name.lower() not in _IGNORED
        and p.suffix.lower() in IMAGE_SUFFIXES
    )


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded bytes to float32 ``[h, w, 3]`` in [0, 1]."""
    if len(data) == 0:
        raise BadImageError(name, "empty file (0 bytes)")
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BadImageError(
            name,
            f"too large ({size[1]}x{size[0]} pixels, more than ssad.images.MAX_PIXELS = "
            f"{MAX_PIXELS:,}); downscale it",
        )
    try:
        x = tf.io.decode_image(data, dtype=tf.float32, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        reason = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", str(e)).strip()  # no TF op names
        reason = reason.splitlines()[0].rstrip(". ") if reason else type(e).__name__
        raise BadImageError(name, f"cannot decode as an image ({reason[:120]})") from None
    return to_rgb(x.numpy())


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG, JPEG, GIF or BMP header, ``None`` when not found."""
    try:
        if data.startswith(b"\x89PNG") and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
        elif data.startswith(b"GIF8"):
            width, height = struct.unpack("<HH", data[6:10])
        elif data.startswith(b"BM"):
            width, height = struct.unpack("<ii", data[18:26])
        elif data.startswith(b"\xff\xd8"):
            height, width = tf.io.extract_jpeg_shape(data)[:2].numpy().tolist()
        else:
            return None
    except (struct.error, tf.errors.InvalidArgumentError):
        return None
    return abs(height), abs(width)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as float32 ``[h, w, 3]`` in [0, 1]."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImageError(path, f"cannot read ({e.strerror or e})") from None
    return decode_image(data, str(path))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header when possible."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImageError(path, f"cannot read ({e.strerror or e})") from None
    size = header_size(data)
    return size if size is not None else decode_image(data, str(path)).shape[:2]


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as bool ``[h, w]``: any non-zero pixel is a defect."""
    return read_image(path).max(axis=-1) > 0


def to_rgb(x: np.ndarray) -> np.ndarray:
    """``[h, w]``, ``[h, w, 1|2|3|4]`` -> float32 ``[h, w, 3]`` (gray repeated, alpha dropped)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image [h, w] or [h, w, 1-4], got shape {x.shape}")
    if x.shape[-1] in (1, 2):
        x = np.repeat(x[..., :1], 3, axis=-1)
    return np.ascontiguousarray(x[..., :3])


def resize(x: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Resize ``[h, w, c]`` (anti-aliased when shrinking); ``method="nearest"`` for masks."""
    if x.shape[:2] == (height, width):
        return x
    y = tf.image.resize(x, (height, width), method=method, antialias=method != "nearest")
    return y.numpy().astype(x.dtype)


def encode_png(x: np.ndarray) -> bytes:
    """float in [0, 1] (or uint8/bool) ``[h, w]`` or ``[h, w, c]`` -> PNG bytes."""
    x = np.asarray(x)
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif x.dtype != np.uint8:
        x = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if x.ndim == 2:
        x = x[..., None]
    return tf.io.encode_png(x).numpy()


def write_png(path: str | os.PathLike, x: np.ndarray) -> None:
    """Write an image atomically as PNG."""
    atomic_write_bytes(path, encode_png(x))
