"""The detection graph's parts: error maps, image scores, test-time augmentation."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import make_run_dir
from scipy import ndimage

from ssad.config import ScoreConfig
from ssad.detection import Detector
from ssad.scoring import anomaly_maps, error_maps, image_score, msgms_map, tta_transforms


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
