"""Good-image statistics: fitted values against NumPy, application in TF, storage."""

import dataclasses

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
    assert stats.quantiles.shape == (1, 17) and stats.mean.shape == (16, 1)
    assert np.all(np.diff(stats.quantiles[0]) > 0)
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
    for name in ("mean", "std", "quantiles"):
        np.testing.assert_array_equal(getattr(again, name), getattr(stats, name))
    with pytest.raises(RunDirError, match="unreadable good-image statistics"):
        GoodStatistics.from_bytes(b"nonsense", "x.npz")
    assert again.image is None and again.for_image is again


def test_image_statistics_travel_with_the_heatmap_statistics():
    maps = _maps(n=4)
    pixel = fit_statistics("pixel", maps)
    stats = dataclasses.replace(fit_statistics("global", maps), image=pixel)
    assert stats.for_image is pixel and stats.shape == (16, 20)  # the image score's size
    again = GoodStatistics.from_bytes(stats.to_bytes())
    assert again.mode == "global" and again.image.mode == "pixel" and again.image.image is None
    for name in ("mean", "std"):
        np.testing.assert_array_equal(getattr(again, name), getattr(stats, name))
        np.testing.assert_array_equal(getattr(again.image, name), getattr(pixel, name))


def test_overall_statistics_travel_with_the_heatmap_statistics():
    maps = _maps(n=4)
    overall = fit_statistics("global", maps)
    stats = dataclasses.replace(fit_statistics("pixel", maps), overall=overall)
    again = GoodStatistics.from_bytes(stats.to_bytes())
    assert again.mode == "pixel" and again.image is None and again.overall.mode == "global"
    for name in ("mean", "std"):
        np.testing.assert_array_equal(getattr(again.overall, name), getattr(overall, name))


def test_nested_statistics_keep_their_own_nested_ones():
    """An image score with maps of its own (score.image_map) is mixed like the heatmap: its
    statistics carry global ones too."""
    maps = _maps(n=4)
    image = dataclasses.replace(
        fit_statistics("pixel", maps), overall=fit_statistics("global", maps[:2])
    )
    stats = dataclasses.replace(
        fit_statistics("structure", maps, [m[..., :1] for m in maps]), image=image
    )
    again = GoodStatistics.from_bytes(stats.to_bytes())
    assert again.overall is None and again.image.overall.mode == "global"
    np.testing.assert_array_equal(again.image.overall.mean, image.overall.mean)
    np.testing.assert_array_equal(again.image.mean, image.mean)


def test_none_is_the_identity():
    maps = _maps(n=2)
    stats = fit_statistics("none", maps)
    x = tf.constant(np.stack(maps), tf.float32)
    np.testing.assert_array_equal(stats.apply(x).numpy(), x.numpy())


def test_structure_statistics_interpolate_between_bin_centres_in_quantile_space():
    # 2 guide channels of 3 bins each: quantiles at levels 0, 1/3, 2/3, 1
    quantiles = np.array([[0.0, 0.1, 0.5, 2.0], [0.2, 0.3, 0.4, 0.6]], np.float32)
    table = np.arange(9, dtype=np.float32).reshape(3, 3) ** 1.5  # a value per cell
    stats = GoodStatistics("structure", -table.reshape(9, 1), np.ones((9, 1), np.float32),
                           quantiles)  # fmt: skip
    rng = np.random.default_rng(0)
    guide = rng.uniform(-0.2, 2.2, (2, 9, 7, 2)).astype(np.float32)  # beyond the ends too
    guide[0, 0, 0] = [0.3, 0.35]  # the middle bin's centre in both channels: its value
    got = stats.apply(tf.zeros((2, 9, 7, 1)), tf.constant(guide)).numpy()[..., 0]
    # NumPy: quantile level (linear between the quantiles) -> bin-centre scale -> bilinear
    a, b = (np.clip(np.interp(guide[..., c], quantiles[c], np.arange(4.0)) - 0.5, 0, 2)
            for c in range(2))  # fmt: skip
    i, j = np.minimum(a.astype(int), 1), np.minimum(b.astype(int), 1)
    s, t = a - i, b - j
    want = ((1 - s) * (1 - t) * table[i, j] + s * (1 - t) * table[i + 1, j]
            + (1 - s) * t * table[i, j + 1] + s * t * table[i + 1, j + 1])  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got[0, 0, 0] == pytest.approx(table[1, 1], rel=1e-6)


def test_structure_normalisation_is_continuous_in_the_guide():
    rng = np.random.default_rng(2)
    guides = [rng.random((32, 32, 1)) ** 3 for _ in range(6)]
    stats = fit_statistics("structure", [3 * g + rng.random(g.shape) for g in guides], guides)
    # values a float32 rounding step apart, at the quantiles (where hard bins would jump by
    # the difference of two cells' means), at the bin centres and anywhere, stay close
    q = stats.quantiles[0]
    v = np.concatenate([q, (q[1:] + q[:-1]) / 2, np.linspace(0, 1, 2001)]).astype(np.float32)

    def normalised(x):
        return stats.apply(tf.zeros((1, x.size, 1, 1)), tf.constant(x.reshape(1, -1, 1, 1)))

    for step in (np.float32(2), np.float32(-1)):
        w = np.nextafter(v, step)
        assert np.abs(normalised(v).numpy() - normalised(w).numpy()).max() < 1e-4


def test_statistics_of_an_earlier_ssad_ask_for_recalibration():
    import io

    buffer = io.BytesIO()
    np.savez(buffer, mode=np.array("structure"), mean=np.zeros((16, 1)), std=np.ones((16, 1)),
             edges=np.zeros((1, 15)))  # fmt: skip
    with pytest.raises(RunDirError, match="ssad calibrate"):
        GoodStatistics.from_bytes(buffer.getvalue(), "x.npz")
    buffer = io.BytesIO()  # its pixel statistics did not change: still read
    np.savez(buffer, mode=np.array("pixel"), mean=np.zeros((4, 4, 1)), std=np.ones((4, 4, 1)),
             edges=np.zeros(0))  # fmt: skip
    assert GoodStatistics.from_bytes(buffer.getvalue()).shape == (4, 4)


def test_quantiles_of_a_heavy_tailed_guide_are_its_own():
    # mostly flat areas and a few strong edges (a tire): no spreading of the low quantiles
    rng = np.random.default_rng(4)
    guide = rng.exponential(1e-4, (100, 200, 1))
    guide[0, :10] = 10.0
    stats = fit_statistics("structure", [np.ones_like(guide)], [guide])
    want = np.quantile(guide, np.linspace(0, 1, 17))
    np.testing.assert_allclose(stats.quantiles[0], want, rtol=1e-5)
