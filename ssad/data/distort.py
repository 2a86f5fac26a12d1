"""The training corruption of section 3.2 and Fig. 4, batched, as TensorFlow ops only.

For each image and patch: sample a patch box (side a fraction of the image side, an aspect
ratio, a location inside the image); take the patch content X1; make X3 from it (``elastic``:
resample X1 along a smooth random displacement field; ``zeros``: cut-out; ``swap``: the same
box from elsewhere in the image), optionally jitter X3's brightness; draw a smooth random
shape mask X2 in [0, 1] inside the box; blend X4 = X2 * X3 + (1 - X2) * X1 and put X4 in place.
The global mask M is X2 embedded in zeros. Where X3 would leave the image (nearly) unchanged,
for example a deformed flat colour, X3 gets a brightness shift, so ||X_hat - X||_1 > 0 always.

The work is done on a fixed-size window around each box (at most ``patch_size[1]`` times the
largest aspect factor of the image side), so its cost does not grow with the image area. All
randomness is stateless and derived from ``seed``: the same seed gives the same output.
"""

from __future__ import annotations

import math

import tensorflow as tf

from ssad.config import DistortionConfig

_MIN_SIDE = 2  # px: the smallest patch side
_MIN_CHANGE = 0.02  # mean |X3 - X1| under the mask below which X3 gets a brightness shift
_SHIFT = 0.25  # that shift: up for dark pixels, down for bright ones
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
    x_hat, mask = x, tf.zeros_like(x[..., :1])
    for i in range(cfg.patches_per_image):
        x_hat, m = _distort_patch(x_hat, cfg, seeds[i], scale)
        mask = tf.maximum(mask, m)
    mask = tf.repeat(mask, 3, axis=-1)
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


def _window_size(side, fraction: float):
    """Static-per-batch window side that holds any patch of up to ``fraction`` of ``side``."""
    k = tf.cast(tf.math.ceil(fraction * tf.cast(side, tf.float32)), tf.int32)
    return tf.clip_by_value(k, _MIN_SIDE, side)


def _windows(x, y0, x0, kh, kw):
    """The ``[b, kh, kw, c]`` windows of ``x`` whose top-left corners are ``(y0, x0)``."""
    rows = y0[:, None] + tf.range(kh)[None, :]
    cols = x0[:, None] + tf.range(kw)[None, :]
    return tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def _upsample(grid, y_first, y_last, x_first, x_last, size):
    """Bilinearly sample ``grid [b, gh, gw, c]`` on a regular ``size`` lattice running from
    grid coordinates ``(y_first, x_first)`` to ``(y_last, x_last)`` (``[b]`` tensors, in
    cells); outside the grid: 0."""
    gh = tf.cast(tf.shape(grid)[1] - 1, tf.float32)
    gw = tf.cast(tf.shape(grid)[2] - 1, tf.float32)
    boxes = tf.stack([y_first / gh, x_first / gw, y_last / gh, x_last / gw], axis=1)
    indices = tf.range(tf.shape(grid)[0])
    return tf.image.crop_and_resize(grid, boxes, indices, size)


def _bilinear(x, y, xx):
    """Sample ``x [b, h, w, c]`` at float pixel coordinates ``y, xx [b, H, W]`` (in range)."""
    y0f, x0f = tf.floor(y), tf.floor(xx)
    wy, wx = (y - y0f)[..., None], (xx - x0f)[..., None]
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)

    def at(yi, xi):
        return tf.gather_nd(x, tf.stack([yi, xi], axis=-1), batch_dims=1)

    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def _shape_mask(batch, kh, kw, oy, ox, ph, pw, cfg: DistortionConfig, seed):
    """X2 on the window: a smooth blob in [0, 1] inside the patch box, never empty.

    A noise grid with cells of ``mask_sigma`` times the patch side plus a centred bump,
    thresholded at a random quantile ``mask_threshold`` of its values with a soft edge.
    """
    s = tf.random.experimental.stateless_split(seed, 2)
    g = max(2, math.ceil(1.0 / cfg.mask_sigma) + 1)
    t = tf.linspace(-1.0, 1.0, g)
    bump = tf.maximum(0.0, 1.0 - t[:, None] ** 2 - t[None, :] ** 2)
    field = 0.5 * bump + 0.5 * tf.random.stateless_uniform([batch, g, g], s[0])
    q = tf.random.stateless_uniform([batch], s[1], *cfg.mask_threshold)
    ranked = tf.sort(tf.reshape(field, [batch, g * g]), axis=1)
    threshold = tf.gather(ranked, tf.cast(tf.round(q * (g * g - 1)), tf.int32), batch_dims=1)

    oy, ox, ph, pw = (tf.cast(v, tf.float32) for v in (oy, ox, ph, pw))
    cells = float(g - 1)
    fkh, fkw = tf.cast(kh, tf.float32), tf.cast(kw, tf.float32)
    f = _upsample(
        field[..., None],
        (0.5 - oy) / ph * cells,
        (fkh - 0.5 - oy) / ph * cells,
        (0.5 - ox) / pw * cells,
        (fkw - 0.5 - ox) / pw * cells,
        [kh, kw],
    )
    iy = tf.range(fkh)[None, :, None, None]
    ix = tf.range(fkw)[None, None, :, None]
    inside = (
        (iy >= oy[:, None, None, None])
        & (iy < (oy + ph)[:, None, None, None])
        & (ix >= ox[:, None, None, None])
        & (ix < (ox + pw)[:, None, None, None])
    )
    # Never empty: the box's highest field value always gets a mask of at least 1/2.
    peak = tf.reduce_max(tf.where(inside, f, -1.0), axis=[1, 2, 3])
    threshold = tf.minimum(threshold, peak - 0.5 * _MASK_EDGE)[:, None, None, None]
    m = tf.clip_by_value((f - threshold) / _MASK_EDGE, 0.0, 1.0)
    return tf.where(inside, m, 0.0)


def _elastic(x1, oy, ox, ph, pw, cfg: DistortionConfig, scale, seed):
    """X3: ``x1`` resampled along a smooth random displacement field, within the patch box.

    Uniform noise in [-1, 1] on a grid with cells of sigma px, smoothed by a Gaussian of one
    cell (so sigma px) and bilinearly interpolated, scaled to a standard deviation of alpha/2.
    """
    s = tf.random.experimental.stateless_split(seed, 3)
    b, kh, kw = tf.shape(x1)[0], tf.shape(x1)[1], tf.shape(x1)[2]
    fkh, fkw = tf.cast(kh, tf.float32), tf.cast(kw, tf.float32)
    alpha = tf.random.stateless_uniform([b], s[0], *cfg.elastic_alpha) * scale
    sigma = tf.random.stateless_uniform([b], s[1], *cfg.elastic_sigma) * scale
    min_sigma = cfg.elastic_sigma[0] * scale
    pad = len(_BINOMIAL) - 1
    gh = tf.cast(tf.math.ceil((fkh - 1.0) / min_sigma), tf.int32) + 1 + pad
    gw = tf.cast(tf.math.ceil((fkw - 1.0) / min_sigma), tf.int32) + 1 + pad
    noise = tf.random.stateless_uniform(tf.stack([b, gh, gw, 2]), s[2], -1.0, 1.0)
    k = tf.constant(_BINOMIAL) / sum(_BINOMIAL)
    kernel = tf.tile((k[:, None] * k[None, :])[:, :, None, None], [1, 1, 2, 1])
    smooth = tf.nn.depthwise_conv2d(noise, kernel, [1, 1, 1, 1], "VALID")
    unit_std = math.sqrt(1.0 / 3.0) * sum(v * v for v in _BINOMIAL) / sum(_BINOMIAL) ** 2
    zero = tf.zeros_like(sigma)
    field = _upsample(smooth, zero, (fkh - 1.0) / sigma, zero, (fkw - 1.0) / sigma, [kh, kw])
    d = field * (0.5 * alpha / unit_std)[:, None, None, None]

    oy, ox, ph, pw = (tf.cast(v, tf.float32)[:, None, None] for v in (oy, ox, ph, pw))
    y = tf.clip_by_value(tf.range(fkh)[None, :, None] + d[..., 0], oy, oy + ph - 1.0)
    xx = tf.clip_by_value(tf.range(fkw)[None, None, :] + d[..., 1], ox, ox + pw - 1.0)
    return _bilinear(x1, y, xx)


def _distort_patch(x, cfg: DistortionConfig, seed, scale):
    """One patch per image of ``x [b, h, w, 3]``: ``(x_hat, mask [b, h, w, 1])``."""
    s = tf.random.experimental.stateless_split(seed, 6)
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    y0, x0, ph, pw = _patch_boxes(b, h, w, cfg, s[0])
    kh = _window_size(h, cfg.patch_size[1] * math.sqrt(cfg.aspect[1]))
    kw = _window_size(w, cfg.patch_size[1] / math.sqrt(cfg.aspect[0]))
    wy, wx = tf.minimum(y0, h - kh), tf.minimum(x0, w - kw)  # window origin; box inside it
    oy, ox = y0 - wy, x0 - wx  # the box's offset in its window
    x1 = _windows(x, wy, wx, kh, kw)
    m = _shape_mask(b, kh, kw, oy, ox, ph, pw, cfg, s[1])

    if cfg.kind == "elastic":
        x3 = _elastic(x1, oy, ox, ph, pw, cfg, scale, s[2])
    elif cfg.kind == "zeros":
        x3 = tf.zeros_like(x1)
    else:  # swap: the same window from a random place in the image
        u = tf.random.stateless_uniform([2, b], s[2])
        sy = tf.cast(tf.floor(u[0] * tf.cast(h - kh + 1, tf.float32)), tf.int32)
        sx = tf.cast(tf.floor(u[1] * tf.cast(w - kw + 1, tf.float32)), tf.int32)
        x3 = _windows(x, sy, sx, kh, kw)
    if cfg.brightness and cfg.kind != "zeros":
        gain = tf.random.stateless_uniform([b, 1, 1, 1], s[3], *cfg.brightness_scale)
        shift = tf.random.stateless_uniform([b, 1, 1, 1], s[4], *cfg.brightness_shift)
        x3 = tf.clip_by_value(x3 * gain + shift, 0.0, 1.0)

    change = tf.reduce_sum(m * tf.abs(x3 - x1), axis=[1, 2, 3])
    too_small = change < _MIN_CHANGE * 3.0 * tf.reduce_sum(m, axis=[1, 2, 3])
    shifted = tf.where(x3 < 0.5, x3 + _SHIFT, x3 - _SHIFT)
    x3 = tf.where(too_small[:, None, None, None], shifted, x3)
    x4 = m * x3 + (1.0 - m) * x1

    # Put X4 and X2 in place: scatter the windows into zeros, keep x where the mask is 0.
    rows = tf.broadcast_to((wy[:, None] + tf.range(kh))[:, :, None], [b, kh, kw])
    cols = tf.broadcast_to((wx[:, None] + tf.range(kw))[:, None, :], [b, kh, kw])
    batch = tf.broadcast_to(tf.range(b)[:, None, None], [b, kh, kw])
    indices = tf.stack([batch, rows, cols], axis=-1)
    placed = tf.scatter_nd(indices, tf.concat([x4, m], axis=-1), tf.stack([b, h, w, 4]))
    mask = placed[..., 3:]
    return tf.where(mask > 0.0, placed[..., :3], x), mask
