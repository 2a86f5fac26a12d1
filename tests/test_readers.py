"""Readers on generated files: formats, odd sizes, bad files, empty folders, both layouts."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ssad.data import readers
from ssad.errors import BadImageError, DataError
from ssad.images import write_png

TIRE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mvtec3d_tire"


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    h, w = indices.shape
    raw = b"".join(b"\x00" + row.astype(np.uint8).tobytes() for row in indices)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
        + _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _bmp(rgb: np.ndarray) -> bytes:
    h, w, _ = rgb.shape
    pad = b"\x00" * ((4 - (w * 3) % 4) % 4)
    pixels = b"".join(rgb[y, :, ::-1].tobytes() + pad for y in range(h - 1, -1, -1))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) + info + pixels


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_formats_and_odd_sizes_load_as_rgb_at_the_working_resolution(tmp_path):
    red = np.zeros((23, 37, 3), np.uint8)
    red[..., 0] = 200
    gray = np.full((31, 17, 1), 90, np.uint8)
    rgba = np.concatenate([np.full((20, 20, 3), 60, np.uint8), np.zeros((20, 20, 1), np.uint8)], -1)
    deep = np.full((9, 13, 1), 32768, np.uint16)  # 16-bit: 32768 / 65535 ~ 0.5
    paths = [
        _write(tmp_path / "red.png", tf.io.encode_png(red).numpy()),
        _write(tmp_path / "gray.png", tf.io.encode_png(gray).numpy()),
        _write(tmp_path / "rgba.png", tf.io.encode_png(rgba).numpy()),
        _write(tmp_path / "deep.png", tf.io.encode_png(deep).numpy()),
        _write(
            tmp_path / "pal.png", _palette_png(np.ones((7, 5)), np.array([[0, 0, 0], [10, 20, 30]]))
        ),
        _write(tmp_path / "blue.bmp", _bmp(np.tile(np.array([0, 0, 250], np.uint8), (11, 6, 1)))),
        _write(
            tmp_path / "flat.jpg", tf.io.encode_jpeg(np.full((16, 24, 3), 150, np.uint8)).numpy()
        ),
    ]
    images, skipped = readers.load_images(paths, 32)
    assert skipped == []
    assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8
    expected = [(200, 0, 0), (90, 90, 90), (60, 60, 60), (128, 128, 128), (10, 20, 30), (0, 0, 250)]
    for image, colour in zip(images, expected, strict=False):
        np.testing.assert_allclose(image.reshape(-1, 3), np.tile(colour, (32 * 32, 1)), atol=1)
    np.testing.assert_allclose(images[6], 150, atol=3)  # JPEG is lossy


def test_corrupt_file_is_an_error_naming_it_or_skipped_and_listed(tmp_path):
    good = tmp_path / "good.png"
    write_png(good, np.full((8, 8, 3), 0.5))
    bad = _write(tmp_path / "bad.png", b"not an image at all")
    empty = _write(tmp_path / "empty.jpg", b"")
    with pytest.raises(BadImageError, match="bad.png"):
        readers.load_images([good, bad], 16)
    images, skipped = readers.load_images([bad, good, empty], 16, on_bad="skip")
    assert images.shape == (1, 16, 16, 3)
    assert all(isinstance(e, BadImageError) for e in skipped)
    assert [Path(e.path).name for e in skipped] == ["bad.png", "empty.jpg"]
    assert "empty" in skipped[1].problem
    with pytest.raises(DataError):
        readers.load_images([bad], 16, on_bad="skip")


def test_empty_folder_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "nothing here"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"\x00\x00")
    (folder / "Thumbs.db").write_bytes(b"\x00")
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="nothing here"):
        readers.training_image_paths(folder)
    with pytest.raises(DataError, match="nothing here"):
        readers.test_samples(folder)
    with pytest.raises(DataError, match="no_such"):
        readers.training_image_paths(tmp_path / "no_such")
    with pytest.raises(DataError, match="missing.png"):
        readers.training_image_paths([tmp_path / "missing.png"])


def _mvtec(root: Path) -> Path:
    for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / sub).mkdir(parents=True)
    for name in ("b.png", "a.png"):
        write_png(root / "train" / "good" / name, np.zeros((8, 8, 3)))
    (root / "train" / "good" / ".DS_Store").write_bytes(b"x")
    write_png(root / "test" / "good" / "000.png", np.zeros((8, 8, 3)))
    write_png(root / "test" / "crack" / "000.png", np.zeros((8, 8, 3)))
    write_png(root / "test" / "crack" / "001.png", np.zeros((8, 8, 3)))  # mask missing
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 1  # any non-zero pixel is a defect; a mask of another size is resized
    write_png(root / "ground_truth" / "crack" / "000_mask.png", mask)
    return root


def test_mvtec_layout(tmp_path):
    root = _mvtec(tmp_path / "cat")
    assert [p.name for p in readers.training_image_paths(root)] == ["a.png", "b.png"]
    samples = readers.test_samples(root)
    assert [(s.path.name, s.defect, s.mask_path and s.mask_path.name) for s in samples] == [
        ("000.png", "crack", "000_mask.png"),
        ("001.png", "crack", None),
        ("000.png", "good", None),
    ]
    with pytest.warns(UserWarning, match="resizing the mask"):
        image, mask = readers.read_sample(samples[0])
    assert image.shape == (8, 8, 3) and image.dtype == np.float32
    assert mask.shape == (8, 8) and mask.dtype == bool
    assert mask[:2, :2].all() and mask.sum() == 4
    assert readers.read_sample(samples[2])[1] is None


def test_plain_folder_with_mask_folder(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("x.png", "y.jpg", "z.png"):
        write_png(images / name, np.zeros((6, 6, 3)))
    write_png(masks / "x.png", np.full((6, 6), 255, np.uint8))
    write_png(masks / "y_mask.png", np.zeros((6, 6), np.uint8))
    samples = readers.test_samples(images, masks)
    assert [(s.defect, s.mask_path and s.mask_path.name) for s in samples] == [
        ("unknown", "x.png"),
        ("unknown", "y_mask.png"),
        ("unknown", None),
    ]
    assert readers.read_sample(samples[0])[1].all()
    assert not readers.read_sample(samples[1])[1].any()
    with pytest.raises(DataError, match="nope"):
        readers.test_samples(images, tmp_path / "nope")


@pytest.mark.skipif(not TIRE.is_dir(), reason="shared MVTec tire data absent")
def test_shared_tire_data():
    assert len(readers.training_image_paths(TIRE)) == 239
    samples = readers.test_samples(TIRE)
    assert len(samples) == 25 + 5 + 28 + 27 + 27
    defective = [s for s in samples if s.defect != "good"]
    assert all(s.mask_path is not None for s in defective)
    image, mask = readers.read_sample(defective[0])
    assert image.shape == (320, 240, 3) and mask.shape == (320, 240) and mask.any()
