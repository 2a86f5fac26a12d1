"""Good-image statistics: fitted values against NumPy, application in TF, storage."""

import numpy as np
import pytest
import tensorflow as tf

from ssad.errors import RunDirError
from ssad.statistics import GoodStatistics, fit_statistics

STD_FLOOR = 0.1  # fit_statistics' default


def _maps(n=12, h=16, w=20, m=2, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((h, w, m))  # each position has its own typical error
    return [base + rng.normal(0, 0.1 + base, (h, w, m)) for _ in range(n)]


def test_pixel_statistics_are_per_position_mean_and_floored_std():
    maps = _maps()
    stats = fit_statistics("pixel", maps)
    stack = np.stack(maps)
    np.testing.assert_allclose(stats.mean, stack.mean(0), rtol=1e-5)
    std = stack.std(0)
    floor = STD_FLOOR * std.reshape(-1, 2).mean(0)
    np.testing.assert_allclose(stats.std, np.maximum(std, floor), rtol=1e-5)
    assert stats.shape == (16, 20)
    z = stats.apply(tf.constant(np.stack(maps), tf.float32)).numpy()
    np.testing.assert_allclose(z, (stack - stats.mean) / stats.std, rtol=1e-4, atol=1e-5)
    assert abs(z.mean()) < 1e-4  # the good images themselves are centred at 0


def test_floor_keeps_flat_positions_from_exploding():
    maps = [np.zeros((8, 8, 1)) for _ in range(4)]
    for i, x in enumerate(maps):
        x[:, 4:] = i  # left half: always 0 (std 0), right half varies
    stats = fit_statistics("pixel", maps)
    level = stats.std[:, 4:].mean() / 2  # mean std over all positions
    assert stats.std[:, :4].min() == pytest.approx(STD_FLOOR * level, rel=1e-5)


def test_global_statistics_pool_every_pixel_of_every_image():
    maps = _maps(n=3) + [np.ones((5, 7, 2))]  # any sizes
    stats = fit_statistics("global", maps)
    values = np.concatenate([x.reshape(-1, 2) for x in maps])
    np.testing.assert_allclose(stats.mean, values.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, values.std(0), rtol=1e-5)
    assert stats.shape is None


def test_structure_statistics_remove_the_error_explained_by_the_guide():
    rng = np.random.default_rng(1)
    guides = [rng.random((32, 32, 1)) for _ in range(10)]  # one guide channel
    # good images: error grows with the local structure (edges are always harder)
    maps = [3 * g + rng.normal(0, 0.1 + g, g.shape) for g in guides]
    stats = fit_statistics("structure", maps, guides)
    assert stats.edges.shape == (1, 15) and stats.mean.shape == (16, 1)
    z = stats.apply(tf.constant(np.stack(maps), tf.float32), tf.constant(np.stack(guides)))
    z = z.numpy()[..., 0]
    guide = np.stack(guides)[..., 0]
    for low, high in ((0, 0.2), (0.8, 1.0)):  # flat and busy areas alike: mean 0, std 1
        chosen = z[(guide >= low) & (guide < high)]
        assert abs(chosen.mean()) < 0.1 and 0.8 < chosen.std() < 1.2
    raw_flat = np.stack(maps)[..., 0][guide < 0.2].mean()
    raw_busy = np.stack(maps)[..., 0][guide >= 0.8].mean()
    assert raw_busy - raw_flat > 2  # what the raw map would have shown


def test_round_trip_and_bad_bytes():
    stats = fit_statistics("structure", _maps(n=4), [np.arange(320.0).reshape(16, 20, 1)] * 4)
    again = GoodStatistics.from_bytes(stats.to_bytes())
    assert again.mode == "structure"
    for name in ("mean", "std", "edges"):
        np.testing.assert_array_equal(getattr(again, name), getattr(stats, name))
    with pytest.raises(RunDirError, match="unreadable good-image statistics"):
        GoodStatistics.from_bytes(b"nonsense", "x.npz")


def test_none_is_the_identity():
    maps = _maps(n=2)
    stats = fit_statistics("none", maps)
    x = tf.constant(np.stack(maps), tf.float32)
    np.testing.assert_array_equal(stats.apply(x).numpy(), x.numpy())


def test_structure_cells_are_the_bins_numpy_searchsorted_gives():
    edges = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.6]], np.float32)  # 2 guide channels
    cells = 4 * 4
    stats = GoodStatistics("structure", np.arange(cells, dtype=np.float32)[:, None],
                           np.ones((cells, 1), np.float32), edges)  # fmt: skip
    rng = np.random.default_rng(0)
    guide = rng.random((2, 9, 7, 2)).astype(np.float32)
    guide[0, 0, 0] = edges[:, 1]  # values exactly on an edge fall into the bin above it
    got = -stats.apply(tf.zeros((2, 9, 7, 1)), tf.constant(guide)).numpy()[..., 0]
    bins = [np.searchsorted(edges[g], guide[..., g], side="right") for g in range(2)]
    np.testing.assert_array_equal(got, bins[0] * 4 + bins[1])
