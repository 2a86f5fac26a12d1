"""The detection graph shared by ``Detector`` and the exported SavedModel.

``anomaly_maps`` takes float32 images ``[b, h, w, 3]`` in [0, 1] of any size and returns the
heatmap at the input's size, the image score and the reconstruction:

1. resize to the working geometry (``ssad.data.geometry``), pad to a multiple of 8
   (symmetric), run the autoencoder (``reconstruct``: whole, or in overlapping tiles when a
   side exceeds ``score.tile``), for each test-time augmentation (``score.tta``) of the input;
2. ``error_maps``: the raw error maps of ``score.map`` and ``score.image_map`` (squared
   error, 1 - MSGMS, squared error of square roots), averaged over the augmentations and
   Gaussian-smoothed;
3. normalise the heatmap's maps by the good-image statistics (``ssad.statistics``) and
   average the terms;
4. ``image_score``: the maximum, the maximum of the k x k box mean or the mean of the top
   k*k pixels of the map normalised for the image score (the heatmap, or the maps of
   ``score.image_map`` normalised by the image score's own statistics,
   ``score.image_normalize``); resize the heatmap back to the input's size.

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

from ssad.data.geometry import resize_antialiased, to_working
from ssad.layers import dilated_conv2d
from ssad.model import receptive_radius

# Layers whose ``call`` works in any float dtype (their ``__call__`` would cast to float32).
_DTYPE_AGNOSTIC = (layers.ReLU, layers.MaxPooling2D, layers.Concatenate)


def gaussian_kernel(sigma: float) -> tf.Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    return k / tf.reduce_sum(k)


def gaussian_smooth(maps: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of ``[b, h, w]`` (or of each channel of ``[b, h, w, m]``, ``m``
    static); borders renormalised (valid for any size). Single-channel convolutions: exporters
    and runtimes take them everywhere (OpenVINO's bfloat16 depthwise convolution hangs, and
    tf2onnx mis-converts a transpose into the batch at unknown sizes)."""
    if sigma <= 0:
        return maps
    if maps.shape.rank == 4:
        channels = [gaussian_smooth(maps[..., i], sigma) for i in range(maps.shape[-1])]
        return tf.stack(channels, axis=-1)
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
        y = dilated_conv2d(x, kernel, conv.dilation_rate, conv.padding, conv.strides, export=True)
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


def reconstruct(model, x: tf.Tensor, dtype: str = "float32", tile: int = 0) -> tf.Tensor:
    """The model's reconstruction of ``x [b, h, w, 3]`` (any h and w: padded to multiples of
    8, cropped back).

    ``tile`` > 0: an image with a side above ``tile`` pixels is processed in overlapping tiles
    of at most ``tile`` x ``tile`` (bounded memory for any image size), blended with smooth
    weights that are zero within ``margin`` pixels of a tile's inner edges; ``margin`` is the
    model's receptive radius (``ssad.model.receptive_radius``), at most ``tile / 8``. Where the
    radius fits in the margin the result equals the whole-image one; tile offsets are
    multiples of 8, so poolings see the same grid.
    """
    size = tf.shape(x)[1:3]
    padded = pad_to_multiple(x)
    if tile <= 0:
        return inference_forward(model, padded, dtype)[:, : size[0], : size[1], :]
    tile = tile // 8 * 8
    margin = min(_round_up(receptive_radius(model), 8), tile // 8 // 8 * 8)
    ramp = max(8, tile // 8 // 8 * 8)
    height, width = _dim(padded, 1), _dim(padded, 2)
    th, tw = _min(tile, height), _min(tile, width)
    starts_h = _tile_starts(height, th, tile - 2 * margin - ramp)
    starts_w = _tile_starts(width, tw, tile - 2 * margin - ramp)

    def weighted_tile(top, left):
        """One tile's weighted output and weights, zero-padded to the whole image."""
        part = tf.slice(padded, tf.stack([0, top, left, 0]), [-1, th, tw, 3])
        w = (_edge_weights(top, th, height, margin, ramp)[:, None]
             * _edge_weights(left, tw, width, margin, ramp)[None, :])  # fmt: skip
        out = inference_forward(model, part, dtype) * w[None, :, :, None]
        where = [[0, 0], [top, height - top - th], [left, width - left - tw], [0, 0]]
        return tf.pad(out, where), tf.pad(w, where[1:3])

    if isinstance(starts_h, list) and isinstance(starts_w, list):
        # a static size (a square working geometry): the tiles unrolled, no loop, so that
        # every exporter converts the graph; one tile is the whole image
        if len(starts_h) * len(starts_w) == 1:
            return inference_forward(model, padded, dtype)[:, : size[0], : size[1], :]
        parts = [weighted_tile(top, left) for top in starts_h for left in starts_w]
        total, weight = tf.add_n([p[0] for p in parts]), tf.add_n([p[1] for p in parts])
    else:
        n_w = tf.size(starts_w)

        def body(i, total, weight):
            out, w = weighted_tile(starts_h[i // n_w], starts_w[i % n_w])
            return i + 1, total + out, weight + w

        zeros = tf.zeros_like(padded)
        _, total, weight = tf.while_loop(
            lambda i, *_: i < tf.size(starts_h) * n_w,
            body,
            [tf.constant(0), zeros, zeros[0, :, :, 0]],
        )
    return (total / weight[None, :, :, None])[:, : size[0], : size[1], :]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _dim(t: tf.Tensor, axis: int):
    """``t``'s size along ``axis``: a Python int when static, else a scalar tensor."""
    return t.shape[axis] if t.shape[axis] is not None else tf.shape(t)[axis]


def _min(a, b):
    return min(a, b) if isinstance(b, int) else tf.minimum(a, b)


def _tile_starts(length, tile, stride: int):
    """Start offsets (multiples of 8) of tiles of ``tile`` covering ``length`` with steps of
    ``stride``; the last tile ends at ``length``. A list for static sizes, else a tensor."""
    # ceil((length - tile) / stride) with non-negative operands only: exporters turn integer
    # floor division into ONNX's truncating Div
    if isinstance(length, int) and isinstance(tile, int):
        n = 1 + (max(0, length - tile) + stride - 1) // stride
        return [min(i * stride, length - tile) for i in range(n)]
    length, tile = tf.convert_to_tensor(length), tf.convert_to_tensor(tile)
    n = 1 + (tf.maximum(0, length - tile) + stride - 1) // stride
    return tf.minimum(tf.range(n) * stride, length - tile)


def _edge_weights(start, tile, length, margin: int, ramp: int) -> tf.Tensor:
    """Blending weights ``[tile]`` along one axis: 0 for ``margin`` pixels from an inner
    edge, rising as a raised cosine over ``ramp`` pixels, 1 elsewhere and at image borders."""
    pos = tf.cast(tf.range(tile), tf.float32)

    def rise(distance):
        u = tf.clip_by_value((distance - margin) / ramp, 0.0, 1.0)
        return 0.5 - 0.5 * tf.cos(math.pi * u)

    before = tf.where(start > 0, rise(pos), 1.0)
    after = tf.where(start + tile < length, rise(tf.cast(tile, tf.float32) - 1.0 - pos), 1.0)
    return before * after


# -- error maps -----------------------------------------------------------------------------------

# Prewitt kernels [3, 3, 1, 2] for d/dx and d/dy. NumPy, not a tf.constant: creating a tensor
# at import time would start TensorFlow's runtime before a multi-worker strategy can set it up.
_PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3, np.float32) / 3.0
_PREWITT = np.stack([_PREWITT_X, _PREWITT_X.T], axis=-1)[:, :, None, :]
MSGMS_SCALES = 4  # image scales 1, 1/2, 1/4, 1/8
MSGMS_C = 0.0026  # RIAD's stabilising constant, for values in [0, 1]
SQRT_OFFSET = 1e-4  # added to intensities before the square root of the "sqrt" map


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
        total += gms if not level else resize_antialiased(gms, size)
    return 1.0 - total[..., 0] / MSGMS_SCALES


def _root(images: tf.Tensor) -> tf.Tensor:
    """Square roots of intensities, with a small offset (a finite gradient at 0)."""
    return tf.sqrt(tf.maximum(images, 0.0) + SQRT_OFFSET)


def error_maps(recon: tf.Tensor, images: tf.Tensor, terms: tuple[str, ...]) -> tf.Tensor:
    """The raw (unsmoothed) error maps named by ``terms``, stacked ``[b, h, w, m]``."""
    makers = {
        "squared": lambda: tf.reduce_mean(tf.square(recon - images), axis=-1),
        "msgms": lambda: msgms_map(recon, images),
        "sqrt": lambda: tf.reduce_mean(tf.square(_root(recon) - _root(images)), axis=-1),
    }
    return tf.stack([makers[t]() for t in terms], axis=-1)


def structure_guide(images: tf.Tensor, recon: tf.Tensor, sigma: float, source: str) -> tf.Tensor:
    """What ``structure`` normalisation conditions the error statistics on, ``[b, h, w, 1]``:
    the local gradient energy (large on edges, mortar lines, texture), Gaussian-smoothed, of
    the input (``source="input"``), of its reconstruction (``"reconstruction"``) or the mean
    of the two (``"mean"``). A defect's own edges raise the input's energy, and with it the
    spread it is normalised by; the reconstruction, which replaces the defect, does not."""
    sources = {"input": [images], "reconstruction": [recon], "mean": [images, recon]}[source]
    energy = tf.add_n([tf.square(gradient_magnitude(_gray(t))) for t in sources])
    return gaussian_smooth(energy / len(sources), sigma)


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
    total, recon = 0.0, None
    transforms = tta_transforms(score.tta)
    for forward, inverse in transforms:
        xt = forward(x)
        rt = reconstruct(model, xt, dtype, score.tile)
        total += inverse(error_maps(rt, xt, score.all_terms))
        if recon is None:
            recon = rt  # the identity transform comes first
    maps = gaussian_smooth(total / len(transforms), sigma)
    return tf.ensure_shape(maps, [None, None, None, len(score.all_terms)]), recon


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


def anomaly_maps(
    model,
    images: tf.Tensor,
    data,
    sigma: float,
    score=None,
    statistics=None,
    dtype: str = "float32",
):
    """``(heatmap [b, h, w], score [b], reconstruction [b, h, w, 3])`` for ``images``.

    ``data``: the run's ``DataConfig``, whose working geometry (``ssad.data.geometry``) the
    model runs at (``None``: the input's own size); ``sigma``: heatmap smoothing in pixels at
    the working scale;
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
    x = to_working(images, data)
    maps, recon = raw_maps(model, x, score, sigma, dtype)
    k_px = max(1, round(score.image_k * (256 if data is None else data.resolution) / 256))
    heat, image = heatmap_and_score(maps, x, recon, statistics, sigma, score, k_px)
    if x is not images:
        # back to each input's size with the exporters' resize (bilinear when upscaling,
        # antialiased when downscaling)
        heat = resize_antialiased(heat[..., None], size)[..., 0]
        recon = resize_antialiased(recon, size)
    return heat, image, recon


def normalized_heatmap(maps: tf.Tensor, statistics, guide, score) -> tf.Tensor:
    """Raw maps ``[b, h, w, m]`` normalised by ``statistics`` (``guide``: the structure guide,
    for ``structure`` statistics), mixed with their global normalisation as
    ``score.global_mix`` says (when ``statistics.overall`` holds it) and averaged over the
    terms: the heatmap ``[b, h, w]``."""
    if statistics is None:
        return tf.reduce_mean(maps, axis=-1)
    z = statistics.apply(maps, guide if statistics.mode == "structure" else None)
    if statistics.overall is not None and score.global_mix > 0:
        mix = score.global_mix
        z = (1.0 - mix) * z + mix * statistics.overall.apply(maps)
    return tf.reduce_mean(z, axis=-1)


def heatmap_and_score(maps, x, recon, statistics, sigma: float, score, k_px: int):
    """``(heatmap [b, h, w], image score [b])`` at the working geometry from the raw maps of
    ``score.all_terms`` of images ``x`` reconstructed as ``recon``: the heatmap from those of
    ``score.map``, the score from those of ``score.image_map`` normalised by
    ``statistics.image``, or from the heatmap when the image score has no statistics of its
    own (raw maps: no statistics at all)."""
    image_stats = None if statistics is None else statistics.image
    guide = None
    if any(s is not None and s.mode == "structure" for s in (statistics, image_stats)):
        guide = structure_guide(x, recon, sigma, score.structure_guide)  # once for both
    heat = normalized_heatmap(_terms(maps, score.map_terms, score), statistics, guide, score)
    if image_stats is None:
        if statistics is not None and score.image_terms != score.map_terms:
            raise ValueError(
                "the good-image statistics lack the image score's own ones (score.image_map); "
                "recalibrate the run"
            )
        return heat, image_score(heat, score, k_px)
    own = normalized_heatmap(_terms(maps, score.image_terms, score), image_stats, guide, score)
    return heat, image_score(own, score, k_px)


def _terms(maps: tf.Tensor, terms: tuple[str, ...], score) -> tf.Tensor:
    """The channels of ``terms`` in maps ``[b, h, w, m]`` of ``score.all_terms``."""
    if terms == score.all_terms:
        return maps
    return tf.gather(maps, [score.all_terms.index(t) for t in terms], axis=-1)
