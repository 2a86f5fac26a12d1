import keras
import numpy as np
import pytest
import tensorflow as tf

import ssad
from ssad.model import count_flops


@pytest.fixture(scope="module")
def tiny_model():
    return ssad.build_autoencoder(ssad.Config.preset("tiny").model)


def _dilated_5x5(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.Conv2DTranspose)
        and layer.kernel_size == (5, 5)
    ]


def test_sdc_structure():
    cfg = ssad.Config.preset("paper").model
    model = ssad.build_autoencoder(cfg)
    convs = _dilated_5x5(model)
    assert len(convs) == 4 * 6
    for block in range(4):
        rates = sorted(c.dilation_rate[0] for c in convs[block * 6 : (block + 1) * 6])
        assert rates == [1, 2, 4, 8, 16, 32]
        assert all(c.filters == 64 for c in convs[block * 6 : (block + 1) * 6])
    concats = [lyr for lyr in model.layers if isinstance(lyr, keras.layers.Concatenate)]
    assert len(concats) == 4
    assert all(c.output.shape[-1] == 384 for c in concats)
    assert len([lyr for lyr in model.layers if isinstance(lyr, keras.layers.Conv2DTranspose)]) == 3
    assert len([lyr for lyr in model.layers if isinstance(lyr, keras.layers.MaxPooling2D)]) == 3


@pytest.mark.parametrize("shape", [(64, 64), (256, 192)])
def test_output_shape_equals_input(tiny_model, shape):
    x = np.random.default_rng(0).random((2, *shape, 3), dtype=np.float32)
    y = tiny_model.predict(x, verbose=0)
    assert y.shape == x.shape
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_last_layer_sigmoid_without_bn(tiny_model):
    last = tiny_model.layers[-1]
    assert isinstance(last, keras.layers.Conv2D) and last.kernel_size == (1, 1)
    assert last.activation is keras.activations.sigmoid
    assert last.filters == 3
    # its input comes from a ReLU, and nothing (no BN) follows it
    assert isinstance(tiny_model.layers[-2], keras.layers.ReLU)
    assert tiny_model.outputs[0] is last.output


def test_keras_round_trip_safe_mode(tmp_path, tiny_model):
    path = tmp_path / "m.keras"
    tiny_model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(tiny_model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_paper_size_weights_and_flops():
    model = ssad.build_autoencoder(ssad.Config.preset("paper").model)
    # weights from the layers' kernel shapes (no biases before BN; BN adds 4 per channel)
    n = model.count_params()
    assert 20e6 <= n <= 21e6, n
    # FLOPs at 512x512 from each conv's output shape on a 64x64 probe, scaled by (512/64)^2
    convs = [
        lyr
        for lyr in model.layers
        if isinstance(lyr, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
    ]
    probe = keras.Model(model.inputs, [c.output for c in convs] + [c.input for c in convs])
    outs = probe.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0)
    flops = 0
    for c, out, inp in zip(convs, outs[: len(convs)], outs[len(convs) :], strict=True):
        kh, kw = c.kernel_size
        cin, cout = inp.shape[-1], out.shape[-1]
        # a transposed conv does its k*k*cout multiply-adds per *input* position
        positions = (
            inp.shape[1] * inp.shape[2]
            if isinstance(c, keras.layers.Conv2DTranspose)
            else out.shape[1] * out.shape[2]
        )
        flops += 2 * positions * kh * kw * cin * cout
    flops *= (512 // 64) ** 2
    assert abs(flops / 1e9 - 268) < 3, flops / 1e9
    assert count_flops(model, 512, 512) == flops
    # 12 % of the paper model's FLOPs at 512 px meet only padding, 25 % at 128 px
    assert 0.85 < count_flops(model, 512, 512, useful=True) / flops < 0.9
    assert 0.7 < count_flops(model, 128, 128, useful=True) / count_flops(model, 128, 128) < 0.8


def test_useful_flops_count_the_taps_that_meet_data():
    from ssad.layers import DilatedConv2D

    for rate, (h, w) in ((1, (9, 7)), (4, (9, 7)), (8, (12, 20))):
        inputs = keras.Input((h, w, 2))
        conv = DilatedConv2D(3, 5, padding="same", dilation_rate=rate, use_bias=False)
        model = keras.Model(inputs, conv(inputs))
        # ones in, ones kernel: each output counts the taps that meet data there
        taps = tf.nn.conv2d(tf.ones((1, h, w, 1)), tf.ones((5, 5, 1, 1)), 1, "SAME", dilations=rate)
        want = 2 * int(tf.reduce_sum(taps)) * 2 * 3
        assert count_flops(model, h, w, useful=True) == want
        assert count_flops(model, h, w) == 2 * h * w * 25 * 2 * 3


def test_width_multiplier_scales_channels():
    half = ssad.build_autoencoder(ssad.Config.preset("paper").override({"model.width": 0.5}).model)
    convs = _dilated_5x5(half)
    assert all(c.filters == 32 for c in convs)


def test_dilated_conv_matches_keras_conv():
    from ssad.layers import DilatedConv2D

    x = np.random.default_rng(2).random((2, 24, 20, 5), dtype=np.float32)
    # a 24 x 20 map: rate 2 keeps every tap, the larger rates drop those that meet only padding
    for rate in (2, 8, 12, 16, 32):
        ref = keras.layers.Conv2D(4, 5, padding="same", dilation_rate=rate)
        fast = DilatedConv2D(4, 5, padding="same", dilation_rate=rate)
        ref.build(x.shape)
        fast.build(x.shape)
        fast.set_weights(ref.get_weights())
        np.testing.assert_allclose(fast(x), ref(x), atol=1e-5)
        traced = tf.function(fast, input_signature=[tf.TensorSpec([None, None, None, 5])])
        np.testing.assert_allclose(traced(x), ref(x), atol=1e-5)  # sizes unknown: whole kernel
    restored = keras.layers.deserialize(keras.layers.serialize(fast))
    assert type(restored) is DilatedConv2D and restored.dilation_rate == (32, 32)


def test_padding_taps_are_cut_only_where_they_never_meet_data():
    from ssad.layers import dilated_conv2d

    kernel = tf.constant(np.random.default_rng(3).random((5, 5, 2, 3), dtype=np.float32))
    x = tf.constant(np.random.default_rng(4).random((1, 16, 9, 2), dtype=np.float32))
    # a 16 x 9 map: rate 8 keeps the offsets 0 and +-8 on both axes (+-16 never meets data);
    # rate 16 keeps only the centre tap; rate 4 keeps all 5 x 5
    for rate, taps in ((8, (3, 3)), (16, (1, 1)), (4, (5, 5))):
        graph = tf.function(lambda t, r=rate: dilated_conv2d(t, kernel, r)).get_concrete_function(
            tf.TensorSpec(x.shape)
        )
        shapes = [
            tuple(op.outputs[0].shape[:2])
            for op in graph.graph.get_operations()
            if op.type == "Conv2D"
        ]
        kernels = [
            tuple(op.inputs[1].shape[:2])
            for op in graph.graph.get_operations()
            if op.type == "Conv2D"
        ]
        assert kernels == [taps], (rate, kernels, shapes)
        want = tf.nn.conv2d(x, kernel, 1, "SAME", dilations=rate)
        np.testing.assert_allclose(graph(x), want, atol=1e-5)
