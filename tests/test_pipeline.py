"""The tf.data pipelines: element structure, crops at constant pixel scale, determinism."""

import numpy as np
import pytest

import ssad
from ssad.images import write_png
from ssad.losses import unpack_targets

TINY = ssad.Config.preset("tiny")  # resolution 64


def _coded_images(n: int = 3, res: int = 64) -> np.ndarray:
    """uint8 images whose pixels spell out (row, column, image index)."""
    rows, cols = np.meshgrid(np.arange(res), np.arange(res), indexing="ij")
    return np.stack(
        [np.stack([rows, cols, np.full_like(rows, 100 + i)], -1) for i in range(n)]
    ).astype(np.uint8)


def _batches(ds, count):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]


def test_train_elements_are_distorted_crops_with_packed_targets():
    images = _coded_images()
    cfg = TINY.override({"data.rotate": False, "data.flip": False})
    ds = ssad.data.train_dataset(images, cfg, 32, 4, seed=3)
    assert [tuple(s.shape) for s in ds.element_spec] == [(4, 32, 32, 3), (4, 32, 32, 9)]
    for x_hat, targets in _batches(ds, 3):
        x, packed_x_hat, mask = (np.asarray(t) for t in unpack_targets(targets))
        np.testing.assert_array_equal(packed_x_hat, x_hat)
        assert (mask.max(axis=(1, 2, 3)) > 0).all()
        np.testing.assert_array_equal(x_hat[mask == 0], x[mask == 0])
        for crop in np.round(x * 255).astype(np.uint8):
            top, left, index = crop[0, 0]  # an unrotated crop of the working-resolution image
            np.testing.assert_array_equal(
                crop, images[index - 100, top : top + 32, left : left + 32]
            )


def test_rotations_and_flips_happen_when_configured():
    images = _coded_images(1)
    ds = ssad.data.train_dataset(images, TINY, 64, 2, seed=0, distort=False)
    corners = {tuple(x[0, 0, :2]) for batch in _batches(ds, 8) for x in np.round(batch[0] * 255)}
    assert corners == {(0, 0), (0, 63), (63, 0), (63, 63)}  # the four corners come up top-left


def test_train_dataset_is_deterministic_for_a_seed():
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), np.uint8)
    a = _batches(ssad.data.train_dataset(images, TINY, 32, 2, seed=1), 3)
    b = _batches(ssad.data.train_dataset(images, TINY, 32, 2, seed=1), 3)
    c = _batches(ssad.data.train_dataset(images, TINY, 32, 2, seed=2), 3)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][1], c[0][1])


@pytest.mark.parametrize("override", [{"distortion.kind": "none"}, {}])
def test_without_distortion_x_hat_is_x_and_the_mask_zero(override):
    images = np.random.default_rng(0).random((3, 64, 64, 3)).astype(np.float32)
    cfg = TINY.override(override)
    ds = ssad.data.train_dataset(images, cfg, 32, 3, distort=bool(override))
    x_hat, targets = _batches(ds, 1)[0]
    np.testing.assert_array_equal(targets[..., :3], x_hat)
    np.testing.assert_array_equal(targets[..., 3:6], x_hat)
    assert targets[..., 6:].max() == 0


def test_validation_is_finite_centre_crops_with_fixed_distortions():
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), np.uint8)
    ds = ssad.data.validation_dataset(images, TINY, 32, 2, seed=4)
    first, second = _batches(ds, 10), _batches(ds, 10)
    assert [x.shape[0] for x, _ in first] == [2, 2, 1]
    x = np.concatenate([t[..., :3] for _, t in first])
    np.testing.assert_allclose(x * 255, images[:, 16:48, 16:48], atol=1e-3)
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    whole = _batches(ssad.data.validation_dataset(images, TINY, 64, 5), 1)[0]
    assert whole[0].shape == (5, 64, 64, 3)


def test_folder_source_with_a_file_cache(tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"{i}.png", np.full((50, 70, 3), i / 4))
    cache = tmp_path / "cache" / "decoded"
    cache.parent.mkdir()
    cfg = TINY.override({"data.cache": str(cache)})
    ds = ssad.data.train_dataset(folder, cfg, 32, 2, seed=0, distort=False)
    x = np.concatenate([b[0] for b in _batches(ds, 6)])
    assert sorted({round(float(v) * 4, 1) for v in x[:, 0, 0, 0]}) == [0.0, 1.0, 2.0]
    assert list(cache.parent.glob("decoded*")), "no cache file written"


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\[n, h, w, 3\], got \(2, 32, 32\)"):
        ssad.data.train_dataset(np.zeros((2, 32, 32), np.uint8), TINY, 32, 2)
    with pytest.raises(ValueError, match=r"in \[8, 32\] \(the smallest image side\)"):
        ssad.data.train_dataset(np.zeros((2, 32, 48, 3), np.uint8), TINY, 40, 2)
    with pytest.raises(ValueError, match="crop_size"):
        ssad.data.train_dataset(_coded_images(), TINY, 36, 2)
