import keras
import numpy as np
import pytest

import ssad
from ssad.batchnorm import recalibrate_batch_norm
from ssad.model import init_output_bias


@pytest.fixture()
def model():
    keras.utils.set_random_seed(1)
    return ssad.build_autoencoder(ssad.Config.preset("tiny").model)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_recalibration_gives_the_batch_statistics(model):
    images = _images()
    x = images.astype("float32") / 255.0
    # Every batch holds all four images, so the cumulative mean is that batch's statistics.
    assert recalibrate_batch_norm(model, images, batch_size=4, batches=3) == 3
    conv = keras.Model(model.input, model.get_layer("enc1_conv1").output)(x).numpy()
    bn = model.get_layer("enc1_conv1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv.var(axis=(0, 1, 2)), rtol=1e-4)
    # ... so inference mode now reproduces training mode on that batch, layer after layer.
    np.testing.assert_allclose(model(x, training=False), model(x, training=True), atol=1e-4)
    assert bn.momentum == ssad.Config().model.bn_momentum  # restored


def test_images_of_several_sizes_are_one_batch_each(model):
    # two images of different sizes: the statistics are the mean of their per-image ones
    images = [_images(1, 32, 0)[0], _images(1, 48, 1)[0][:, :40]]
    recalibrate_batch_norm(model, images, batches=2)  # without replacement: each once
    conv = keras.Model(model.input, model.get_layer("enc1_conv1").output)
    per_image = [conv(x[None].astype("float32") / 255.0).numpy() for x in images]
    bn = model.get_layer("enc1_conv1_bn")
    want_mean = np.mean([c.mean(axis=(0, 1, 2)) for c in per_image], axis=0)
    want_var = np.mean([c.var(axis=(0, 1, 2)) for c in per_image], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), want_mean, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_var, rtol=1e-4)


def test_recalibration_leaves_trainable_weights_alone(model):
    before = [w.numpy().copy() for w in model.trainable_weights]
    recalibrate_batch_norm(model, _images(6), batch_size=2, batches=4)
    for a, b in zip(before, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


def test_fresh_model_statistics_are_far_from_the_recomputed_ones(model):
    # The moving statistics start at mean 0 / variance 1: inference mode of a fresh model
    # is not training mode, which is what the recalibration repairs.
    x = _images().astype("float32") / 255.0
    gap = np.abs(model(x, training=False) - model(x, training=True)).max()
    assert gap > 1e-2


def test_output_bias_starts_at_the_mean_colour(model):
    init_output_bias(model, [0.25, 0.5, 0.0])
    bias = model.get_layer("reconstruction").bias.numpy()
    np.testing.assert_allclose(bias, [np.log(1 / 3), 0.0, np.log(0.02 / 0.98)], rtol=1e-5)
    x = np.zeros((1, 32, 32, 3), "float32")
    model.get_layer("reconstruction").kernel.assign(
        np.zeros_like(model.get_layer("reconstruction").kernel.numpy())
    )
    np.testing.assert_allclose(model(x)[0, 0, 0], [0.25, 0.5, 0.02], atol=1e-5)
