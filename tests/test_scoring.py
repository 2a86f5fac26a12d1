"""The detection graph's parts: error maps, image scores, test-time augmentation."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import make_run_dir
from scipy import ndimage

from ssad.calibration import calibrate_on_good
from ssad.config import ScoreConfig
from ssad.detection import Detector
from ssad.scoring import (
    anomaly_maps,
    error_maps,
    image_score,
    msgms_map,
    structure_guide,
    tta_transforms,
)


def _images(n=2, h=32, w=40, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((n, h, w, 3)), (0, 1, 1, 0)).astype(np.float32)


def test_squared_error_map_and_msgms():
    a, b = _images(), _images(seed=1)
    maps = error_maps(tf.constant(a), tf.constant(b), ("squared", "msgms")).numpy()
    assert maps.shape == (2, 32, 40, 2)
    np.testing.assert_allclose(maps[..., 0], np.mean((a - b) ** 2, -1), rtol=1e-5)
    same = msgms_map(tf.constant(a), tf.constant(a)).numpy()
    np.testing.assert_allclose(same, 0.0, atol=1e-5)  # identical gradients: no error
    assert maps[..., 1].min() >= -1e-6 and maps[..., 1].max() <= 1 + 1e-6
    assert maps[..., 1].mean() > 0.01


def test_sqrt_map_is_the_squared_error_of_square_roots():
    a, b = _images(), _images(seed=1)
    maps = error_maps(tf.constant(a), tf.constant(b), ("sqrt",)).numpy()[..., 0]
    np.testing.assert_allclose(
        maps, np.mean((np.sqrt(a + 1e-4) - np.sqrt(b + 1e-4)) ** 2, -1), rtol=1e-4
    )
    # the same difference weighs ~9 times less at intensity 0.9 than at 0.1 (variance-stabilised)
    dark, bright = np.full((1, 4, 4, 3), 0.1, np.float32), np.full((1, 4, 4, 3), 0.9, np.float32)
    d = lambda x: error_maps(tf.constant(x + 0.01), tf.constant(x), ("sqrt",)).numpy().mean()  # noqa: E731
    assert d(dark) / d(bright) == pytest.approx(9.0, rel=0.05)


def test_msgms_sees_a_structural_change_that_keeps_the_brightness():
    image = _images(n=1)
    changed = image.copy()
    changed[:, 8:24, 8:24] = changed[:, 8:24, 8:24].mean()  # texture wiped, same mean
    m = msgms_map(tf.constant(changed), tf.constant(image)).numpy()[0]
    assert m[10:22, 10:22].mean() > 5 * m[:, 30:].mean()


@pytest.mark.parametrize("kind", ["max", "mean_max", "topk_mean"])
def test_image_scores_against_numpy(kind):
    heat = np.random.default_rng(2).normal(size=(3, 24, 30)).astype(np.float32)
    cfg = ScoreConfig(image=kind)
    got = image_score(tf.constant(heat), cfg, 5).numpy()
    if kind == "max":
        want = heat.max(axis=(1, 2))
    elif kind == "mean_max":  # box mean over the pixels inside the image
        box = [
            ndimage.uniform_filter(h, 5, mode="constant")
            / ndimage.uniform_filter(np.ones_like(h), 5, mode="constant")
            for h in heat
        ]
        want = np.array([b.max() for b in box])
    else:
        want = np.sort(heat.reshape(3, -1), axis=1)[:, -25:].mean(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,count", [("none", 1), ("flips", 4), ("dihedral", 8)])
def test_tta_transforms_are_distinct_and_inverted(mode, count):
    x = tf.constant(_images(n=1, h=12, w=12))
    pairs = tta_transforms(mode)
    assert len(pairs) == count
    seen = {forward(x).numpy().tobytes() for forward, _ in pairs}
    assert len(seen) == count
    for forward, inverse in pairs:
        np.testing.assert_array_equal(inverse(forward(x)).numpy(), x.numpy())


def test_tta_averages_the_maps_of_the_transformed_inputs(tmp_path):
    detector = Detector.load(make_run_dir(tmp_path / "run"))
    x = _images(n=2, h=32, w=48)
    cfg = ScoreConfig(map="squared", normalize="none", tta="flips")
    heat, _, _ = anomaly_maps(detector.model, x, None, 2.0, cfg)
    plain = ScoreConfig(map="squared", normalize="none")
    want = 0
    for forward, inverse in tta_transforms("flips"):
        h, _, _ = anomaly_maps(detector.model, forward(x), None, 2.0, plain)
        want += inverse(h[..., None])[..., 0]
    np.testing.assert_allclose(heat.numpy(), want.numpy() / 4, rtol=1e-4, atol=1e-7)


def test_structure_guide_sources():
    x = np.zeros((1, 16, 24, 3), np.float32)
    x[:, :, 12:] = 1.0  # a vertical edge in the input ...
    flat = np.full_like(x, 0.5)  # ... that the reconstruction removed
    guides = {
        source: structure_guide(tf.constant(x), tf.constant(flat), 1.0, source).numpy()
        for source in ("input", "reconstruction", "mean")
    }
    assert guides["input"].shape == (1, 16, 24, 1)
    # away from the zero-padded border: energy on the input's edge, none on the flat recon
    assert guides["input"][0, 8, 11, 0] > 0.5 and guides["input"][0, 8, 4, 0] < 1e-6
    assert guides["reconstruction"][0, 8, 11, 0] < 1e-6
    swapped = structure_guide(tf.constant(flat), tf.constant(x), 1.0, "input").numpy()
    np.testing.assert_allclose(guides["reconstruction"], swapped, rtol=1e-6)
    np.testing.assert_allclose(
        guides["mean"], (guides["input"] + guides["reconstruction"]) / 2, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("source", ["input", "reconstruction", "mean"])
def test_structure_statistics_are_fitted_on_the_chosen_guide(tmp_path, source):
    """Calibration bins the good pixels by the guide ``score.structure_guide`` names, and the
    detector applies them with the same guide."""
    detector = Detector.load(make_run_dir(tmp_path / "run"))
    cfg = detector.config.override(
        {"score.normalize": "structure", "score.structure_guide": source}
    )
    plain = Detector(detector.model, cfg)
    h, w = plain.working_size(48, 48)
    images = _images(n=4, h=h, w=w, seed=3)  # the working size: scored as given
    calibration, statistics = calibrate_on_good(plain, images, 2)
    maps, xs, recons = plain.working_maps(images)
    guide = structure_guide(tf.constant(xs), tf.constant(recons), plain.sigma, source).numpy()
    levels = np.linspace(0, 1, statistics.quantiles.shape[1])
    np.testing.assert_allclose(
        statistics.quantiles[0], np.quantile(guide.ravel(), levels), rtol=1e-5, atol=1e-9
    )
    heat, _ = Detector(detector.model, cfg, calibration, statistics).maps(images)
    want, _ = plain.finish(maps, xs, recons, statistics)
    np.testing.assert_allclose(heat, want, rtol=1e-5, atol=1e-5)
    assert abs(heat.mean()) < 0.1  # centred on the good images it was fitted on


@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_global_mix_blends_the_normalised_map_with_its_global_normalisation(tmp_path, mix):
    """score.global_mix: (1 - a) * structure-normalised + a * globally normalised heatmap,
    with both statistics from the same good images."""
    detector = Detector.load(make_run_dir(tmp_path / "run"))
    cfg = detector.config.override(
        {"score.normalize": "structure", "score.global_mix": mix, "score.image_map": "same"}
    )
    plain = Detector(detector.model, cfg)
    h, w = plain.working_size(48, 48)
    images = _images(n=4, h=h, w=w, seed=5)
    _, statistics = calibrate_on_good(plain, images, 2)
    assert statistics.overall.mode == "global"
    maps, xs, recons = plain.working_maps(images)
    guide = structure_guide(tf.constant(xs), tf.constant(recons), plain.sigma, "mean")
    z_structure = statistics.apply(tf.constant(maps), guide).numpy().mean(-1)
    assert maps.shape[-1] == len(cfg.score.map_terms) == 2  # squared and msgms, each normalised
    z_global = ((maps - statistics.overall.mean) / statistics.overall.std).mean(-1)
    heat, _ = plain.finish(maps, xs, recons, statistics)
    want = (1 - mix) * z_structure + mix * z_global
    np.testing.assert_allclose(heat, want, rtol=1e-4, atol=1e-4)
