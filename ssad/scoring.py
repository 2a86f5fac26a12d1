"""The detection graph shared by ``Detector`` and the exported SavedModel.

``anomaly_maps`` takes float32 images ``[b, h, w, 3]`` in [0, 1] of any size and returns the
heatmap at the input's size, the image score and the reconstruction:

1. resize to the working resolution, pad to a multiple of 8 (symmetric), run the autoencoder
   (``inference_forward``), for each test-time augmentation (``score.tta``) of the input;
2. ``error_maps``: the raw error maps of ``score.map`` (squared error, 1 - MSGMS), averaged
   over the augmentations and Gaussian-smoothed;
3. normalise them by the good-image statistics (``ssad.statistics``) and average the terms;
4. ``image_score``: the map's maximum, the maximum of its k x k box mean or the mean of its
   top k*k pixels; resize the heatmap back to the input's size.

Pure TensorFlow, so the same function runs eagerly, in ``tf.function`` and in the export.

The autoencoder runs through ``inference_forward``: the saved model stays a plain Keras model,
and the detection graph folds batch normalisation into the convolutions and runs dilated
convolutions as single ``Conv2D`` ops (Keras runs them as space-to-batch: 20x slower on CPU
for dilation 32 at 64x64), optionally in bfloat16.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from keras import layers, ops
from keras.activations import linear

from ssad.layers import dilated_conv2d

# Layers whose ``call`` works in any float dtype (their ``__call__`` would cast to float32).
_DTYPE_AGNOSTIC = (layers.ReLU, layers.MaxPooling2D, layers.Concatenate)


def gaussian_kernel(sigma: float) -> tf.Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    return k / tf.reduce_sum(k)


def gaussian_smooth(maps: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of ``[b, h, w]`` (or of each channel of ``[b, h, w, m]``);
    borders renormalised (valid for any size)."""
    if sigma <= 0:
        return maps
    if maps.shape.rank == 4:
        stacked = tf.transpose(maps, [3, 0, 1, 2])  # [m, b, h, w]
        shape = tf.shape(stacked)
        flat = tf.reshape(stacked, tf.concat([[-1], shape[2:]], 0))
        smooth = tf.reshape(gaussian_smooth(flat, sigma), shape)
        return tf.transpose(smooth, [1, 2, 3, 0])
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
    """Pad ``[b, h, w, c]`` at the bottom/right to multiples of ``multiple`` (symmetric).
    Static sizes stay static (so the convolutions can drop taps that only meet padding)."""
    h, w = images.shape[1], images.shape[2]
    h = tf.shape(images)[1] if h is None else h
    w = tf.shape(images)[2] if w is None else w
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
        y = dilated_conv2d(x, kernel, conv.dilation_rate, conv.padding, conv.strides)
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


# -- error maps -----------------------------------------------------------------------------------

# Prewitt kernels [3, 3, 1, 2] for d/dx and d/dy. NumPy, not a tf.constant: creating a tensor
# at import time would start TensorFlow's runtime before a multi-worker strategy can set it up.
_PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3, np.float32) / 3.0
_PREWITT = np.stack([_PREWITT_X, _PREWITT_X.T], axis=-1)[:, :, None, :]
MSGMS_SCALES = 4  # image scales 1, 1/2, 1/4, 1/8
MSGMS_C = 0.0026  # RIAD's stabilising constant, for values in [0, 1]


def _gray(images: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(images, axis=-1, keepdims=True)


def gradient_magnitude(gray: tf.Tensor) -> tf.Tensor:
    """Prewitt gradient magnitude of ``[b, h, w, 1]`` (zero-padded borders)."""
    g = tf.nn.conv2d(gray, _PREWITT, strides=1, padding="SAME")
    return tf.sqrt(tf.reduce_sum(tf.square(g), axis=-1, keepdims=True) + 1e-12)


def msgms_map(recon: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """``1 - MSGMS`` ``[b, h, w]``: one minus the gradient-magnitude similarity of the gray
    images, averaged over ``MSGMS_SCALES`` scales (RIAD, Zavrtanik et al. 2021)."""
    a, b = _gray(recon), _gray(images)
    size = tf.shape(images)[1:3]
    total = 0.0
    for level in range(MSGMS_SCALES):
        if level:
            a = tf.nn.avg_pool2d(a, 2, 2, "SAME")
            b = tf.nn.avg_pool2d(b, 2, 2, "SAME")
        ga, gb = gradient_magnitude(a), gradient_magnitude(b)
        gms = (2.0 * ga * gb + MSGMS_C) / (tf.square(ga) + tf.square(gb) + MSGMS_C)
        total += gms if not level else tf.image.resize(gms, size, method="bilinear")
    return 1.0 - total[..., 0] / MSGMS_SCALES


def error_maps(recon: tf.Tensor, images: tf.Tensor, terms: tuple[str, ...]) -> tf.Tensor:
    """The raw (unsmoothed) error maps named by ``terms``, stacked ``[b, h, w, m]``."""
    makers = {
        "squared": lambda: tf.reduce_mean(tf.square(recon - images), axis=-1),
        "msgms": lambda: msgms_map(recon, images),
    }
    return tf.stack([makers[t]() for t in terms], axis=-1)


def structure_guide(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """What ``structure`` normalisation conditions the error statistics on, ``[b, h, w, 1]``:
    the local gradient energy of ``images`` (large on edges, mortar lines, texture),
    Gaussian-smoothed."""
    energy = tf.square(gradient_magnitude(_gray(images)))
    return gaussian_smooth(energy, sigma)


# -- test-time augmentation -----------------------------------------------------------------------


def _flip_w(t):
    return tf.reverse(t, [2])


def _flip_h(t):
    return tf.reverse(t, [1])


def tta_transforms(mode: str) -> list[tuple]:
    """``(forward, inverse)`` pairs on ``[b, h, w, c]`` tensors: the identity first."""

    def identity(t):
        return t

    pairs = [(identity, identity)]
    if mode in ("flips", "dihedral"):
        pairs += [(_flip_w, _flip_w), (_flip_h, _flip_h)]
        pairs += [(lambda t: _flip_h(_flip_w(t)), lambda t: _flip_h(_flip_w(t)))]
    if mode == "dihedral":  # transposes: the four diagonal symmetries left

        def transpose(t):
            return tf.transpose(t, [0, 2, 1, 3])

        for f, _ in list(pairs):
            pairs.append((lambda t, f=f: transpose(f(t)), lambda t, f=f: f(transpose(t))))
    return pairs


def raw_maps(model, x: tf.Tensor, score, sigma: float, dtype: str = "float32"):
    """``(smoothed raw maps [b, h, w, m], reconstruction [b, h, w, 3])`` of working-resolution
    images ``x``, averaged over the test-time augmentations of ``score.tta``."""
    work = tf.shape(x)[1:3]
    total, recon = 0.0, None
    transforms = tta_transforms(score.tta)
    for forward, inverse in transforms:
        xt = forward(x)
        size = tf.shape(xt)[1:3]
        rt = inference_forward(model, pad_to_multiple(xt), dtype)[:, : size[0], : size[1], :]
        total += inverse(error_maps(rt, xt, score.map_terms))
        if recon is None:
            recon = rt
    maps = gaussian_smooth(total / len(transforms), sigma)
    return tf.ensure_shape(maps, [None, None, None, len(score.map_terms)]), recon[
        :, : work[0], : work[1]
    ]


# -- image score ----------------------------------------------------------------------------------


def image_score(heatmap: tf.Tensor, score, k_px: int) -> tf.Tensor:
    """Image scores ``[b]`` of working-resolution heatmaps ``[b, h, w]`` (``score.image``):
    the maximum, the maximum of the ``k_px``-box mean, or the mean of the top ``k_px**2``
    pixels."""
    if score.image == "max":
        return tf.reduce_max(heatmap, axis=[1, 2])
    if score.image == "mean_max":
        boxed = tf.nn.avg_pool2d(heatmap[..., None], k_px, 1, "SAME")  # TF: mean of valid pixels
        return tf.reduce_max(boxed, axis=[1, 2, 3])
    flat = tf.reshape(heatmap, [tf.shape(heatmap)[0], -1])
    k = tf.minimum(k_px * k_px, tf.shape(flat)[1])
    return tf.reduce_mean(tf.math.top_k(flat, k).values, axis=1)


def to_working_resolution(images: tf.Tensor, resolution: int | None) -> tf.Tensor:
    """``images`` resized (antialiased) to the square working resolution (``None``: as is)."""
    if resolution is None:
        return images
    return tf.image.resize(images, (resolution, resolution), method="bilinear", antialias=True)


def anomaly_maps(
    model,
    images: tf.Tensor,
    resolution: int | None,
    sigma: float,
    score=None,
    statistics=None,
    dtype: str = "float32",
):
    """``(heatmap [b, h, w], score [b], reconstruction [b, h, w, 3])`` for ``images``.

    ``resolution``: side of the working resolution the model was trained at (``None`` runs
    at the input's own size); ``sigma``: heatmap smoothing in pixels at that resolution;
    ``score``: the ``ScoreConfig`` (default: squared error, image maximum, no TTA);
    ``statistics``: ``ssad.statistics.GoodStatistics`` to normalise by (``None``: raw maps);
    ``dtype``: compute dtype of the autoencoder (``"bfloat16"`` is faster on CPUs with AMX or
    AVX512-BF16; reconstructions then differ from float32 by up to a few 1e-3; outputs stay
    float32).
    """
    from ssad.config import ScoreConfig

    score = score or ScoreConfig(map="squared", normalize="none", image="max")
    images = tf.convert_to_tensor(images, tf.float32)
    size = tf.shape(images)[1:3]
    x = to_working_resolution(images, resolution)
    maps, recon = raw_maps(model, x, score, sigma, dtype)
    heat = normalized_heatmap(maps, x, statistics, sigma)
    k_px = max(1, round(score.image_k * (resolution or 256) / 256))
    image = image_score(heat, score, k_px)
    if resolution is not None:
        heat = tf.image.resize(heat[..., None], size, method="bilinear")[..., 0]
        recon = tf.image.resize(recon, size, method="bilinear")
    return heat, image, recon


def normalized_heatmap(maps: tf.Tensor, x: tf.Tensor, statistics, sigma: float) -> tf.Tensor:
    """Raw maps ``[b, h, w, m]`` of working-resolution images ``x`` normalised by
    ``statistics`` and averaged over the terms: the heatmap ``[b, h, w]``."""
    if statistics is None:
        return tf.reduce_mean(maps, axis=-1)
    guide = structure_guide(x, sigma) if statistics.mode == "structure" else None
    return tf.reduce_mean(statistics.apply(maps, guide), axis=-1)
