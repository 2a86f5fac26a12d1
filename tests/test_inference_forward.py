import keras
import numpy as np
import pytest
import tensorflow as tf

import ssad
from ssad.scoring import inference_forward


@pytest.fixture(scope="module")
def trained_like_model():
    """The tiny model with non-trivial BatchNormalization statistics, as after training."""
    model = ssad.build_autoencoder(ssad.Config.preset("tiny").model)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.normal(0, 0.1, n),
                    rng.normal(0, 0.1, n),
                    rng.uniform(0.5, 2.0, n),
                ]
            )
    return model


@pytest.fixture(scope="module")
def images():
    return tf.constant(np.random.default_rng(1).random((2, 64, 48, 3), dtype=np.float32))


def test_float32_equals_keras_forward(trained_like_model, images):
    expected = trained_like_model(images, training=False).numpy()
    eager = inference_forward(trained_like_model, images).numpy()
    np.testing.assert_allclose(eager, expected, atol=1e-5)
    graph = tf.function(
        lambda x: inference_forward(trained_like_model, x),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    np.testing.assert_allclose(graph(images).numpy(), expected, atol=1e-5)
    assert graph(images[:1, :32, :40]).shape == (1, 32, 40, 3)


def test_bfloat16_is_close_and_float32_out(trained_like_model, images):
    expected = trained_like_model(images, training=False).numpy()
    out = inference_forward(trained_like_model, images, "bfloat16")
    assert out.dtype == tf.float32
    diff = np.abs(out.numpy() - expected).max()
    assert 0 < diff < 0.03, diff


def test_follows_weight_changes(trained_like_model, images):
    bn = trained_like_model.get_layer("dec3_conv2_bn")
    before = inference_forward(trained_like_model, images).numpy()
    old = bn.get_weights()
    try:
        bn.set_weights([old[0], old[1] + 1.0, *old[2:]])  # beta + 1
        after = inference_forward(trained_like_model, images).numpy()
        np.testing.assert_allclose(
            after, trained_like_model(images, training=False).numpy(), atol=1e-5
        )
        assert np.abs(after - before).max() > 0.05
    finally:
        bn.set_weights(old)


def test_layers_that_cannot_be_folded(images):
    """BN after an activation, a conv output used twice, and other layers run as in Keras."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = keras.layers.BatchNormalization()(a)
    c = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2, use_bias=False)(b)
    d = keras.layers.BatchNormalization()(c)
    e = keras.layers.Add()([c, d])
    outputs = keras.layers.Conv2D(3, 1, activation="sigmoid")(e)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([w + 0.3 for w in layer.get_weights()])
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(inference_forward(model, images).numpy(), expected, atol=1e-5)
    bf16 = inference_forward(model, images, "bfloat16").numpy()
    assert np.abs(bf16 - expected).max() < 0.03
