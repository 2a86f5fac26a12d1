"""The detection graph shared by ``Detector`` and the exported SavedModel.

``anomaly_maps`` takes float32 images ``[b, h, w, 3]`` in [0, 1] of any size, resizes them to
the working resolution, pads to a multiple of 8 (reflect), runs the autoencoder, and returns
the Gaussian-smoothed heatmap of mean-over-channels squared error at the input's size, the
image score (the heatmap's maximum at the working resolution) and the reconstruction at the
input's size. Pure TensorFlow, so the same function runs eagerly, in ``tf.function`` and in
the export.
"""

from __future__ import annotations

import math

import tensorflow as tf


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


def anomaly_maps(model, images: tf.Tensor, resolution: int | None, sigma: float):
    """``(heatmap [b, h, w], score [b], reconstruction [b, h, w, 3])`` for ``images``.

    ``resolution``: side of the working resolution the model was trained at (``None`` runs
    at the input's own size); ``sigma``: heatmap smoothing in pixels at that resolution.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    size = tf.shape(images)[1:3]
    x = images
    if resolution is not None:
        x = tf.image.resize(x, (resolution, resolution), method="bilinear", antialias=True)
    work = tf.shape(x)[1:3]
    recon = tf.cast(model(pad_to_multiple(x), training=False), tf.float32)
    recon = recon[:, : work[0], : work[1], :]
    heat = gaussian_smooth(tf.reduce_mean(tf.square(recon - x), axis=-1), sigma)
    score = tf.reduce_max(heat, axis=[1, 2])
    if resolution is not None:
        heat = tf.image.resize(heat[..., None], size, method="bilinear")[..., 0]
        recon = tf.image.resize(recon, size, method="bilinear")
    return heat, score, recon
