"""The training corruption of section 3.2 and Fig. 4, batched, as TensorFlow ops only.

For each image and patch: sample a patch box (side a fraction of the image side, an aspect
ratio, a location inside the image); take the patch content X1; make X3 from it (``elastic``:
resample X1 along a smooth random displacement field; ``zeros``: cut-out; ``swap``: the same
box from elsewhere in the image), optionally jitter X3's brightness; draw a smooth random
shape mask X2 in [0, 1] inside the box; blend X4 = X2 * X3 + (1 - X2) * X1 and put X4 in place.
The global mask M is X2 embedded in zeros. Where X3 would leave the image (nearly) unchanged,
for example a deformed flat colour, X3 gets a brightness shift, so ||X_hat - X||_1 > 0 always.

The work is done on the flat list of the boxes' pixels of the whole batch (gathered, then
scattered back), so it costs in proportion to the patch area, not the image area. All
randomness is stateless and derived from ``seed``: the same seed gives the same output.
"""

from __future__ import annotations

import math

import tensorflow as tf

from ssad.config import DistortionConfig

_MIN_SIDE = 2  # px: the smallest patch side
_MIN_CHANGE = 1.0 / 255.0  # mean |X3 - X1| under the mask below which X3 gets a brightness shift
_SHIFT = 0.15  # that shift: up for dark pixels, down for bright ones
_MASK_EDGE = 0.1  # soft edge of the shape mask, in units of its noise field
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)  # a Gaussian of sigma 1 cell, for the displacement grid


def distort(images, cfg: DistortionConfig, seed, resolution: int | None = None):
    """Corrupt a batch: ``images`` ``[b, h, w, 3]`` in [0, 1] (NumPy or tensor) ->
    ``(x_hat, mask)``, both float32 ``[b, h, w, 3]`` (the mask repeated over channels).

    ``seed``: an int or a shape-``[2]`` integer tensor. ``resolution``: the side of the
    working-resolution image that ``images`` were cropped from; pixel sizes in ``cfg``
    (given for 256 px) scale with it (default: the images' own side). Patch sides are
    fractions of the images' own side.
    """
    x = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if cfg.kind == "none":
        return x, tf.zeros_like(x)
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), cfg.patches_per_image)
    shape = tf.shape(x)
    side = tf.cast(tf.minimum(shape[1], shape[2]) if resolution is None else resolution, tf.float32)
    scale = side / 256.0
    x_hat, mask = x, None
    for i in range(cfg.patches_per_image):
        x_hat, m = _distort_patch(x_hat, cfg, seeds[i], scale)
        mask = m if mask is None else tf.maximum(mask, m)
    return tf.ensure_shape(x_hat, x.shape), tf.ensure_shape(mask, x.shape)


def _seed_pair(seed) -> tf.Tensor:
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return seed


def _patch_boxes(batch, height, width, cfg: DistortionConfig, seed):
    """Per image: patch ``(y0, x0, ph, pw)`` as int32 ``[b]`` tensors, inside the image.

    Side s ~ U(patch_size) times the image side, aspect a ~ log-uniform(aspect), ph = s*sqrt(a),
    pw = s/sqrt(a) (so the area is s^2 up to rounding), at least 2 px, at most the image.
    """
    s = tf.random.experimental.stateless_split(seed, 4)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    frac = tf.random.stateless_uniform([batch], s[0], *cfg.patch_size)
    log_a = [math.log(a) for a in cfg.aspect]
    root_a = tf.exp(0.5 * tf.random.stateless_uniform([batch], s[1], *log_a))
    ph = tf.clip_by_value(tf.round(frac * root_a * h), _MIN_SIDE, h)
    pw = tf.clip_by_value(tf.round(frac / root_a * w), _MIN_SIDE, w)
    y0 = tf.floor(tf.random.stateless_uniform([batch], s[2]) * (h - ph + 1.0))
    x0 = tf.floor(tf.random.stateless_uniform([batch], s[3]) * (w - pw + 1.0))
    return tuple(tf.cast(v, tf.int32) for v in (y0, x0, ph, pw))


def _max_side(side, fraction: float):
    """The largest patch side (px) that ``_patch_boxes`` can draw for an image ``side``."""
    k = tf.cast(tf.math.ceil(fraction * tf.cast(side, tf.float32)), tf.int32)
    return tf.clip_by_value(k, _MIN_SIDE, side)


def _box_pixels(y0, x0, ph, pw):
    """Every pixel of every box, flat: ``(image, row, column)`` in the image and
    ``(row, column)`` in the box, int32 ``[n]`` each."""
    ragged = tf.ragged.range(ph * pw)
    image = tf.cast(ragged.value_rowids(), tf.int32)
    k = ragged.flat_values
    width = tf.gather(pw, image)
    ry, rx = k // width, k % width
    return image, tf.gather(y0, image) + ry, tf.gather(x0, image) + rx, ry, rx


def _bilinear(grid, image, y, x):
    """Sample ``grid [b, h, w, c]`` at float pixel coordinates ``(y, x)`` of image ``image``
    (``[n]`` each; clamped to the grid) -> ``[n, c]``."""
    h, w = tf.shape(grid)[1], tf.shape(grid)[2]
    flat = tf.reshape(grid, [-1, grid.shape[-1]])
    y = tf.clip_by_value(y, 0.0, tf.cast(h - 1, tf.float32))
    x = tf.clip_by_value(x, 0.0, tf.cast(w - 1, tf.float32))
    yf, xf = tf.floor(y), tf.floor(x)
    wy, wx = (y - yf)[:, None], (x - xf)[:, None]
    top, left = image * h + tf.cast(yf, tf.int32), tf.cast(xf, tf.int32)
    bottom, right = tf.minimum(top + 1, image * h + h - 1), tf.minimum(left + 1, w - 1)

    def row(r):
        a = tf.gather(flat, r * w + left)
        return a + wx * (tf.gather(flat, r * w + right) - a)

    upper = row(top)
    return upper + wy * (row(bottom) - upper)


def _shape_mask(batch, image, ry, rx, ph, pw, cfg: DistortionConfig, seed):
    """X2 at the box pixels ``[n]``: a smooth blob in [0, 1], never empty.

    A noise grid with cells of ``mask_sigma`` times the box side, times a bump that is 0 on
    the box's border, thresholded at a random quantile ``mask_threshold`` of its values with
    a soft edge.
    """
    s = tf.random.experimental.stateless_split(seed, 2)
    g = max(2, math.ceil(1.0 / cfg.mask_sigma) + 1)
    t = tf.linspace(-1.0, 1.0, g)
    bump = tf.maximum(0.0, 1.0 - t[:, None] ** 2 - t[None, :] ** 2)
    field = bump * (0.2 + 0.8 * tf.random.stateless_uniform([batch, g, g], s[0]))
    q = tf.random.stateless_uniform([batch], s[1], *cfg.mask_threshold)
    ranked = tf.sort(tf.reshape(field, [batch, g * g]), axis=1)
    threshold = tf.gather(ranked, tf.cast(tf.round(q * (g * g - 1)), tf.int32), batch_dims=1)

    def grid_coordinate(r, side):
        return (tf.cast(r, tf.float32) + 0.5) / tf.cast(tf.gather(side, image), tf.float32)

    cells = float(g - 1)
    f = _bilinear(
        field[..., None], image, grid_coordinate(ry, ph) * cells, grid_coordinate(rx, pw) * cells
    )[:, 0]
    # Never empty: the box's highest field value always gets a mask of at least 1/2.
    peak = tf.math.unsorted_segment_max(f, image, batch)
    threshold = tf.minimum(threshold, peak - 0.5 * _MASK_EDGE)
    return tf.clip_by_value((f - tf.gather(threshold, image)) / _MASK_EDGE, 0.0, 1.0)


def _displacements(batch, image, ry, rx, max_h, max_w, cfg: DistortionConfig, scale, seed):
    """The elastic displacement ``[n, 2]`` (px) at the box pixels.

    Uniform noise in [-1, 1] on a grid with cells of sigma px, smoothed by a Gaussian of one
    cell (so sigma px) and bilinearly interpolated, scaled to a standard deviation of alpha/2.
    """
    s = tf.random.experimental.stateless_split(seed, 3)
    alpha = tf.random.stateless_uniform([batch], s[0], *cfg.elastic_alpha) * scale
    sigma = tf.random.stateless_uniform([batch], s[1], *cfg.elastic_sigma) * scale
    min_sigma = cfg.elastic_sigma[0] * scale
    pad = len(_BINOMIAL) - 1

    def cells(side):
        return tf.cast(tf.math.ceil(tf.cast(side - 1, tf.float32) / min_sigma), tf.int32) + 1

    shape = tf.stack([batch, cells(max_h) + pad, cells(max_w) + pad, 2])
    noise = tf.random.stateless_uniform(shape, s[2], -1.0, 1.0)
    k = tf.constant(_BINOMIAL) / sum(_BINOMIAL)
    kernel = tf.tile((k[:, None] * k[None, :])[:, :, None, None], [1, 1, 2, 1])
    smooth = tf.nn.depthwise_conv2d(noise, kernel, [1, 1, 1, 1], "VALID")
    unit_std = math.sqrt(1.0 / 3.0) * sum(v * v for v in _BINOMIAL) / sum(_BINOMIAL) ** 2
    per_px = tf.gather(1.0 / sigma, image)  # grid cells per pixel
    field = _bilinear(
        smooth, image, tf.cast(ry, tf.float32) * per_px, tf.cast(rx, tf.float32) * per_px
    )
    return field * tf.gather(0.5 * alpha / unit_std, image)[:, None]


def _distort_patch(x, cfg: DistortionConfig, seed, scale):
    """One patch per image of ``x [b, h, w, 3]``: ``(x_hat, mask)``, the mask X2 embedded in
    zeros and repeated over channels."""
    s = tf.random.experimental.stateless_split(seed, 6)
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    flat = tf.reshape(x, [-1, 3])
    y0, x0, ph, pw = _patch_boxes(b, h, w, cfg, s[0])
    image, y, xx, ry, rx = _box_pixels(y0, x0, ph, pw)
    m = _shape_mask(b, image, ry, rx, ph, pw, cfg, s[1])
    # From here on only the pixels under the blob (about half the box) matter.
    keep = tf.where(m > 0.0)[:, 0]
    image, y, xx, ry, rx, m = (tf.gather(v, keep) for v in (image, y, xx, ry, rx, m))
    m = m[:, None]
    index = (image * h + y) * w + xx
    x1 = tf.gather(flat, index)

    if cfg.kind == "elastic":
        max_h = _max_side(h, cfg.patch_size[1] * math.sqrt(cfg.aspect[1]))
        max_w = _max_side(w, cfg.patch_size[1] / math.sqrt(cfg.aspect[0]))
        d = _displacements(b, image, ry, rx, max_h, max_w, cfg, scale, s[2])
        # Resample within the box: clamp to its rows and columns.
        fy = tf.cast(y - ry, tf.float32) + tf.clip_by_value(
            tf.cast(ry, tf.float32) + d[:, 0], 0.0, tf.cast(tf.gather(ph, image) - 1, tf.float32)
        )
        fx = tf.cast(xx - rx, tf.float32) + tf.clip_by_value(
            tf.cast(rx, tf.float32) + d[:, 1], 0.0, tf.cast(tf.gather(pw, image) - 1, tf.float32)
        )
        x3 = _bilinear(x, image, fy, fx)
    elif cfg.kind == "zeros":
        x3 = tf.zeros_like(x1)
    else:  # swap: the same box from a random place in the image
        u = tf.random.stateless_uniform([2, b], s[2])
        sy = tf.cast(tf.floor(u[0] * tf.cast(h - ph + 1, tf.float32)), tf.int32)
        sx = tf.cast(tf.floor(u[1] * tf.cast(w - pw + 1, tf.float32)), tf.int32)
        x3 = tf.gather(
            flat, (image * h + tf.gather(sy, image) + ry) * w + tf.gather(sx, image) + rx
        )
    if cfg.brightness and cfg.kind != "zeros":
        gain = tf.random.stateless_uniform([b], s[3], *cfg.brightness_scale)
        shift = tf.random.stateless_uniform([b], s[4], *cfg.brightness_shift)
        x3 = x3 * tf.gather(gain, image)[:, None] + tf.gather(shift, image)[:, None]
        x3 = tf.clip_by_value(x3, 0.0, 1.0)

    change = tf.math.unsorted_segment_sum(tf.reduce_sum(m * tf.abs(x3 - x1), axis=1), image, b)
    area = tf.math.unsorted_segment_sum(m[:, 0], image, b)
    too_small = tf.gather(change < _MIN_CHANGE * 3.0 * area, image)[:, None]
    x3 = tf.where(too_small, tf.where(x3 < 0.5, x3 + _SHIFT, x3 - _SHIFT), x3)
    x4 = m * x3 + (1.0 - m) * x1

    x_hat = tf.tensor_scatter_nd_update(flat, index[:, None], x4)
    mask = tf.scatter_nd(index[:, None], tf.tile(m, [1, 3]), tf.shape(flat))
    return tf.reshape(x_hat, tf.shape(x)), tf.reshape(mask, tf.shape(x))


def preview(images, cfg: DistortionConfig, seed=0):
    """A grid to look at: one row per image of ``images [n, h, w, 3]`` in [0, 1], showing
    original | distorted | mask, separated by white lines (float32 NumPy array)."""
    x = tf.cast(tf.convert_to_tensor(images), tf.float32)
    x_hat, mask = distort(x, cfg, seed)
    gap = tf.ones_like(x[:, :, :2])
    rows = tf.concat([x, gap, x_hat, gap, mask], axis=2)
    rows = tf.pad(rows, [[0, 0], [0, 2], [0, 0], [0, 0]], constant_values=1.0)
    n, h, w, c = rows.shape
    return tf.reshape(rows, [n * h, w, c]).numpy()
