import keras
import numpy as np
import pytest
import tensorflow as tf

import ssad
from ssad import batchnorm
from ssad.batchnorm import FusedBatchNormalization, recalibrate_batch_norm
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


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_layer_computes_what_keras_batch_normalization_computes(policy, affine):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 6, 5, 8)), tf.float32)
    weights = tf.constant(rng.normal(size=x.shape), tf.float32)  # a loss that weighs each value
    results = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=0.8, center=affine, scale=affine, dtype=policy)
        layer.build(x.shape)
        if affine:
            layer.gamma.assign(np.linspace(0.5, 2.0, 8))
            layer.beta.assign(np.linspace(-0.3, 0.3, 8))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        assert y.dtype == layer.compute_dtype
        results.append(
            [y, layer.moving_mean, layer.moving_variance, *grads, layer(x, training=False)]
        )
    tol = 1e-4 if policy == "float32" else 2e-2  # bfloat16 keeps 8 bits of mantissa
    for keras_value, fused_value in zip(*results, strict=True):
        keras_value = np.asarray(tf.cast(keras_value, tf.float32))
        fused_value = np.asarray(tf.cast(fused_value, tf.float32))
        scale = np.abs(keras_value).max()
        np.testing.assert_allclose(fused_value, keras_value, atol=tol * scale)


def test_the_model_is_built_with_the_fused_layer_and_loads_back(model, tmp_path):
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(layer, FusedBatchNormalization) for layer in bns)
    recalibrate_batch_norm(model, _images(), batch_size=4, batches=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("enc1_conv1_bn"), FusedBatchNormalization)
    x = _images().astype("float32") / 255.0
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("fuse", [True, False])
def test_fuse_switch_picks_the_fused_kernel_or_keras_ops(fuse, monkeypatch):
    monkeypatch.setattr(batchnorm, "FUSE", fuse)
    layer = FusedBatchNormalization()
    x = tf.ones((2, 4, 4, 3))
    layer.build(x.shape)
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
    ops = {op.type for op in graph.get_operations()}
    assert ("FusedBatchNormV3" in ops) == fuse
