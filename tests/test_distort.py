"""The corruption of section 3.2: invariants over many seeds, determinism, graph use, CLI."""

import dataclasses
import sys

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import ssad
from ssad.cli import main as cli
from ssad.config import DistortionConfig
from ssad.images import read_image, write_png

_distort_module = sys.modules["ssad.data.distort"]  # ``ssad.data.distort`` is the function
KINDS = ("elastic", "zeros", "swap")


def _images(kind: str, b: int, h: int, w: int, seed: int) -> np.ndarray:
    """Random noise, or a flat colour (where deformation alone changes nothing)."""
    if kind == "noise":
        return np.random.default_rng(seed).random((b, h, w, 3), dtype=np.float32)
    value = {"black": 0.0, "grey": 0.5, "white": 1.0}[kind]
    return np.full((b, h, w, 3), value, np.float32)


def _check_invariants(x: np.ndarray, x_hat, mask) -> None:
    x_hat, mask = np.asarray(x_hat), np.asarray(mask)
    assert x_hat.shape == x.shape and mask.shape == x.shape
    assert x_hat.dtype == np.float32 and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert (mask.max(axis=(1, 2, 3)) > 0).all(), "a mask is all zero"
    np.testing.assert_array_equal(mask[..., 0], mask[..., 2])  # same over channels
    untouched = mask == 0
    np.testing.assert_array_equal(x_hat[untouched], x[untouched])  # exactly
    assert (np.abs(x_hat - x).sum(axis=(1, 2, 3)) > 0).all(), "||x_hat - x||_1 is 0"
    assert x_hat.min() >= 0.0 and x_hat.max() <= 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_invariants_over_many_seeds(kind):
    cfg = dataclasses.replace(DistortionConfig(), kind=kind)
    fn = tf.function(lambda x, seed: ssad.data.distort(x, cfg, seed))
    for seed in range(8):
        for content in ("noise", "black", "grey", "white"):
            x = _images(content, 6, 48, 40, seed)
            _check_invariants(x, *fn(x, tf.constant([seed, 7], tf.int64)))


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    content=st.sampled_from(["noise", "black", "grey", "white"]),
    side=st.sampled_from([16, 32, 64]),
    patches=st.integers(1, 3),
    brightness=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_invariants_hypothesis(kind, content, side, patches, brightness, seed):
    cfg = DistortionConfig(kind=kind, patches_per_image=patches, brightness=brightness)
    x = _images(content, 3, side, side, seed)
    _check_invariants(x, *ssad.data.distort(x, cfg, seed))


def test_patch_boxes_inside_the_image_with_the_configured_area():
    cfg = DistortionConfig(patch_size=(0.1, 0.3), aspect=(0.5, 2.0))
    h, w = 256, 192
    y0, x0, ph, pw = (v.numpy() for v in _distort_module._patch_boxes(4000, h, w, cfg, [3, 4]))
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + ph <= h).all() and (x0 + pw <= w).all()
    # side s in [0.1, 0.3]: ph ~ s*sqrt(a)*h, pw ~ s/sqrt(a)*w up to rounding to whole pixels
    assert ((ph - 0.5) * (pw - 0.5) <= 0.3**2 * h * w).all()
    assert ((ph + 0.5) * (pw + 0.5) >= 0.1**2 * h * w).all()
    area = ph * pw / (h * w)
    assert area.min() < 0.1**2 * 1.3 and area.max() > 0.3**2 * 0.8  # the range is used
    aspect = (ph / h) / (pw / w)
    assert 0.45 < aspect.min() < 0.6 and 1.7 < aspect.max() < 2.2


def test_mask_lies_within_one_patch_box():
    cfg = DistortionConfig(patch_size=(0.2, 0.25), aspect=(1.0, 1.0))
    x = _images("noise", 16, 64, 64, 0)
    _, mask = ssad.data.distort(x, cfg, 11)
    for m in mask.numpy()[..., 0]:
        rows, cols = np.nonzero(m)
        assert rows.max() - rows.min() + 1 <= 16 and cols.max() - cols.min() + 1 <= 16
        assert len(rows) >= 1


def test_deterministic_under_a_fixed_seed():
    cfg = DistortionConfig()
    x = _images("noise", 4, 32, 32, 1)
    a = ssad.data.distort(x, cfg, 5)
    b = ssad.data.distort(tf.constant(x), cfg, tf.constant([5, 0]))
    c = ssad.data.distort(x, cfg, 6)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    assert not np.array_equal(a[1].numpy(), c[1].numpy())


def test_runs_inside_dataset_map_with_unknown_shapes():
    cfg = DistortionConfig()
    x = _images("noise", 3, 32, 24, 2)
    eager = ssad.data.distort(x, cfg, 9)
    ds = tf.data.Dataset.from_tensors(x).map(lambda b: ssad.data.distort(b, cfg, 9))
    mapped = next(iter(ds))
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32)]
    graph = tf.function(lambda b: ssad.data.distort(b, cfg, 9), input_signature=spec)(x)
    for e, m, g in zip(eager, mapped, graph, strict=True):
        np.testing.assert_allclose(e.numpy(), m.numpy(), atol=1e-6)
        np.testing.assert_allclose(e.numpy(), g.numpy(), atol=1e-6)


def test_kind_none_changes_nothing():
    x = _images("noise", 2, 16, 16, 0)
    x_hat, mask = ssad.data.distort(x, DistortionConfig(kind="none"), 0)
    np.testing.assert_array_equal(x_hat.numpy(), x)
    assert mask.numpy().max() == 0


def test_elastic_displacement_scales_with_resolution():
    """Pixel sizes refer to 256 px: at resolution 512 a crop gets twice the displacement."""
    cfg = DistortionConfig(brightness=False, patch_size=(0.3, 0.3), aspect=(1.0, 1.0))
    x = _images("noise", 8, 64, 64, 3)
    small = np.abs(ssad.data.distort(x, cfg, 1, resolution=64)[0].numpy() - x).sum()
    large = np.abs(ssad.data.distort(x, cfg, 1, resolution=1024)[0].numpy() - x).sum()
    assert large > 1.2 * small


def test_cli_writes_a_grid(tmp_path):
    data = tmp_path / "good"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(data / f"{i}.png", rng.random((40, 50, 3)))
    out = tmp_path / "out" / "preview"
    result = CliRunner().invoke(
        cli, ["distort", str(data), "--out", str(out), "-n", "2", "--preset", "tiny"]
    )
    assert result.exit_code == 0, result.output
    grid = read_image(result.output.strip())
    assert grid.shape == (2 * (64 + 2), 3 * 64 + 2 * 2, 3)
