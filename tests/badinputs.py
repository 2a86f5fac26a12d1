"""A corpus of messy inputs, as inspection folders hold them, written into a test's tmp folder.

``write_corpus(root)`` makes, under ``root / "défauts et rayures"`` (spaces, non-ASCII)::

    odd/        valid but unusual images: 1x1, 16-bit, grayscale, RGBA, palette, a JPEG,
                and .DS_Store and Thumbs.db beside them
    bad/        a zero-byte .png, a truncated PNG, a text file named .jpg, and an 8000x8000
                PNG (over ``ssad.images.MAX_PIXELS``: refused before decoding)
    empty/      no images (only .DS_Store and Thumbs.db)
    mvtec/      an MVTec AD category: train/good (with the odd images and the junk files),
                test/good, test/scratch with a mask of the wrong size and an image with no mask

PNGs are assembled by hand (``png``), so the corpus needs no image library and the large image
costs a few kilobytes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

GRAY, RGB, PALETTE, RGBA = 0, 2, 3, 6  # PNG colour types

BAD = {
    "empty.png": "empty file",
    "truncated.png": "cannot decode",
    "not an image.jpg": "cannot decode",
    "très grand 8000.png": "too large",
}


def png(pixels: np.ndarray, color_type: int = RGB, palette: bytes | None = None) -> bytes:
    """PNG bytes of uint8 or uint16 (16-bit) ``pixels`` ``[h, w]`` or ``[h, w, c]``."""
    pixels = np.asarray(pixels)
    height, width = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1)
    return _png(width, height, depth, color_type, (row.tobytes() for row in rows), palette)


def flat_png(height: int, width: int, value: int = 128) -> bytes:
    """A uniform grayscale PNG, compressed row by row (a large one stays small and cheap)."""
    row = bytes([value]) * width
    return _png(width, height, 8, GRAY, (row for _ in range(height)))


def _png(width, height, depth, color_type, rows, palette=None) -> bytes:
    z = zlib.compressobj(9)
    data = b"".join(z.compress(b"\0" + row) for row in rows) + z.flush()  # filter 0 per row
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))]
    chunks += [(b"PLTE", palette)] if palette else []
    chunks += [(b"IDAT", data), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(kind, d) for kind, d in chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def texture(size: int, seed: int) -> np.ndarray:
    """A uint8 ``[size, size, 3]`` smooth random pattern (a stand-in for a good image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 6, 3)
    x = 0.5 + 0.25 * np.sin(9 * xx[..., None] + phase) * np.cos(7 * yy[..., None] + phase)
    x = x + rng.normal(0, 0.03, x.shape)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def odd_images(size: int = 48) -> dict[str, bytes]:
    """Valid images in unusual formats, by file name."""
    rgb = texture(size, 0)
    gray = rgb[..., 0]
    palette = bytes(np.repeat(np.arange(0, 256, 16, dtype=np.uint8), 3))  # 16 grays
    return {
        "one pixel.png": png(rgb[:1, :1]),
        "sixteen bit.png": png(rgb.astype(np.uint16) * 257),
        "gray.png": png(gray, GRAY),
        "rgba.png": png(np.dstack([rgb, np.full_like(gray, 200)]), RGBA),
        "palette.png": png(gray // 16, PALETTE, palette),
        "photo.jpg": _jpeg(rgb),
    }


def _jpeg(rgb: np.ndarray) -> bytes:
    import tensorflow as tf

    return tf.io.encode_jpeg(rgb, quality=95).numpy()


def bad_images() -> dict[str, bytes]:
    """Files with image suffixes that are not images, by name (see ``BAD`` for the problems)."""
    whole = png(texture(32, 1))
    return {
        "empty.png": b"",
        "truncated.png": whole[: len(whole) // 2],
        "not an image.jpg": b"holiday photos, see attachment\n",
        "très grand 8000.png": flat_png(8000, 8000),
    }


JUNK = {".DS_Store": b"\0\0\0\1Bud1" + bytes(64), "Thumbs.db": bytes(range(256))}


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_corpus(root: str | Path) -> dict[str, Path]:
    """Write the corpus (see the module docstring); returns its folders by name."""
    base = Path(root) / "défauts et rayures"
    good = {f"good {i:02d}.png": png(texture(48, 10 + i)) for i in range(4)}
    mvtec = base / "mvtec"
    _write(mvtec / "train" / "good", good | odd_images() | JUNK)
    _write(mvtec / "test" / "good", {f"{i:03d}.png": png(texture(48, 20 + i)) for i in range(2)})
    _write(mvtec / "test" / "scratch", {f"{i:03d}.png": png(texture(48, 30 + i)) for i in range(2)})
    wrong_size = np.zeros((20, 30), np.uint8)
    wrong_size[5:10, 5:15] = 255
    _write(mvtec / "ground_truth" / "scratch", {"000_mask.png": png(wrong_size, GRAY)})
    # test/scratch/001.png has no mask
    return {
        "base": base,
        "odd": _write(base / "odd", odd_images() | JUNK),
        "bad": _write(base / "bad", bad_images()),
        "empty": _write(base / "empty", JUNK),
        "mvtec": mvtec,
    }
