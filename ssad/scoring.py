"""The detection graph shared by ``Detector`` and the exported SavedModel.

``anomaly_maps`` takes float32 images ``[b, h, w, 3]`` in [0, 1] of any size, resizes them to
the working resolution, pads to a multiple of 8 (reflect), runs the autoencoder, and returns
the Gaussian-smoothed heatmap of mean-over-channels squared error at the input's size, the
image score (the heatmap's maximum at the working resolution) and the reconstruction at the
input's size. Pure TensorFlow, so the same function runs eagerly, in ``tf.function`` and in
the export.

The autoencoder runs through ``inference_forward``: the saved model stays a plain Keras model,
and the detection graph folds batch normalisation into the convolutions and runs dilated
convolutions as single ``Conv2D`` ops (Keras runs them as space-to-batch: 20x slower on CPU
for dilation 32 at 64x64), optionally in bfloat16.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras import layers, ops
from keras.activations import linear

# Layers whose ``call`` works in any float dtype (their ``__call__`` would cast to float32).
_DTYPE_AGNOSTIC = (layers.ReLU, layers.MaxPooling2D, layers.Concatenate)


def gaussian_kernel(sigma: float) -> tf.Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    return k / tf.reduce_sum(k)


def gaussian_smooth(maps: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of ``[b, h, w]``; borders renormalised (valid for any size)."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel(sigma)
    kx = tf.reshape(k, (1, -1, 1, 1))
    ky = tf.reshape(k, (-1, 1, 1, 1))

    def blur(t):
        t = tf.nn.conv2d(t, kx, strides=1, padding="SAME")
        return tf.nn.conv2d(t, ky, strides=1, padding="SAME")

    x = maps[..., None]
    weight = blur(tf.ones_like(x[:1]))
    return (blur(x) / weight)[..., 0]


def pad_to_multiple(images: tf.Tensor, multiple: int = 8) -> tf.Tensor:
    """Pad ``[b, h, w, c]`` at the bottom/right to multiples of ``multiple`` (symmetric)."""
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    return tf.pad(images, [[0, 0], [0, ph], [0, pw], [0, 0]], mode="SYMMETRIC")


def _inputs(layer) -> list:
    return tf.nest.flatten(layer.input)


def _folded_kernel(conv, bn, dtype):
    """Kernel and bias (or ``None``) of ``conv``, with inference-mode ``bn`` (if any) folded in."""
    kernel = tf.convert_to_tensor(conv.kernel)
    bias = tf.convert_to_tensor(conv.bias) if conv.use_bias else None
    if bn is not None:
        scale = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
        if bn.scale:
            scale = scale * bn.gamma
        shift = -tf.convert_to_tensor(bn.moving_mean) * scale
        if bn.center:
            shift = shift + bn.beta
        if bias is not None:
            shift = shift + bias * scale
        out_axis = 2 if isinstance(conv, layers.Conv2DTranspose) else 3  # Keras kernel layouts
        kernel = kernel * tf.reshape(scale, [-1 if i == out_axis else 1 for i in range(4)])
        bias = shift
    return tf.cast(kernel, dtype), None if bias is None else tf.cast(bias, dtype)


def _conv(conv, bn, x, dtype):
    kernel, bias = _folded_kernel(conv, bn, dtype)
    if isinstance(conv, layers.Conv2DTranspose):
        y = ops.conv_transpose(
            x,
            kernel,
            conv.strides,
            conv.padding,
            conv.output_padding,
            dilation_rate=conv.dilation_rate,
        )
    else:  # tf.nn.convolution (what Keras calls) would run dilations as space-to-batch
        y = tf.nn.conv2d(
            x, kernel, conv.strides, conv.padding.upper(), dilations=conv.dilation_rate
        )
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    return conv.activation(y)


def inference_forward(model, images: tf.Tensor, dtype: str = "float32") -> tf.Tensor:
    """``model(images, training=False)`` in float32, computed for speed in ``dtype``
    (``"float32"`` or ``"bfloat16"``).

    Each convolution followed only by a BatchNormalization becomes one convolution with the
    normalisation folded into its kernel and bias; convolutions run as raw ``Conv2D`` ops
    (dilations included). Reads the model's current weights, so it never goes stale.
    """
    users: dict[int, list] = {}
    for layer in model.layers:
        if not isinstance(layer, layers.InputLayer):
            for t in _inputs(layer):
                users.setdefault(id(t), []).append(layer)
    values = {id(model.inputs[0]): tf.cast(images, dtype)}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer) or id(layer.output) in values:
            continue
        x = [values[id(t)] for t in _inputs(layer)]
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            after = users.get(id(layer.output), [])
            bn = after[0] if len(after) == 1 else None
            if not isinstance(bn, layers.BatchNormalization) or layer.activation is not linear:
                bn = None
            y = _conv(layer, bn, x[0], dtype)
            if bn is not None:
                values[id(bn.output)] = y
        elif isinstance(layer, _DTYPE_AGNOSTIC):
            y = layer.call(x if len(x) > 1 else x[0])
        else:
            x = [tf.cast(v, layer.compute_dtype) for v in x]
            y = tf.cast(layer(x if len(x) > 1 else x[0], training=False), dtype)
        values[id(layer.output)] = y
    return tf.cast(values[id(model.outputs[0])], tf.float32)


def anomaly_maps(
    model, images: tf.Tensor, resolution: int | None, sigma: float, dtype: str = "float32"
):
    """``(heatmap [b, h, w], score [b], reconstruction [b, h, w, 3])`` for ``images``.

    ``resolution``: side of the working resolution the model was trained at (``None`` runs
    at the input's own size); ``sigma``: heatmap smoothing in pixels at that resolution;
    ``dtype``: compute dtype of the autoencoder (``"bfloat16"`` is faster on CPUs with AMX or
    AVX512-BF16; reconstructions then differ from float32 by up to a few 1e-3; outputs stay
    float32).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    size = tf.shape(images)[1:3]
    x = images
    if resolution is not None:
        x = tf.image.resize(x, (resolution, resolution), method="bilinear", antialias=True)
    work = tf.shape(x)[1:3]
    recon = inference_forward(model, pad_to_multiple(x), dtype)
    recon = recon[:, : work[0], : work[1], :]
    heat = gaussian_smooth(tf.reduce_mean(tf.square(recon - x), axis=-1), sigma)
    score = tf.reduce_max(heat, axis=[1, 2])
    if resolution is not None:
        heat = tf.image.resize(heat[..., None], size, method="bilinear")[..., 0]
        recon = tf.image.resize(recon, size, method="bilinear")
    return heat, score, recon
