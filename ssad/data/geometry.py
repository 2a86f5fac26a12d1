"""The working geometry: the size at which an image is trained on and scored (``data.resize``).

- ``square``: every image resized to ``data.resolution`` x ``data.resolution`` (right for
  same-sized images of centred objects; squashes other aspects);
- ``scale``: every image resized by one factor ``data.scale``, keeping its aspect, so the
  texture has one pixel scale in every image; training chooses the factor that maps the median
  shorter side of its images to ``data.resolution``;
- ``native``: no resizing.

``auto`` is resolved when training starts (:func:`resolve_resize`): ``square`` when all training
images share one size, else ``scale``. A config that was never resolved (a run made before
``data.resize`` existed, a bare model with a preset) works as ``square``.
The same arithmetic runs in NumPy (:func:`working_size`) and in the detection graph
(:func:`to_working`), so both give the same size for every input.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import tensorflow as tf

from ssad.config import DataConfig
from ssad.errors import ConfigError

MIN_SIDE = 32  # smallest working side an image may have (three 2x poolings, then SDC blocks)


def mode_of(data: DataConfig) -> str:
    """``data.resize`` with an unresolved ``auto`` read as ``square``."""
    return "square" if data.resize == "auto" else data.resize


def working_size(height: int, width: int, data: DataConfig) -> tuple[int, int]:
    """``(h, w)`` of an image of ``height`` x ``width`` pixels at the working geometry."""
    mode = mode_of(data)
    if mode == "square":
        return data.resolution, data.resolution
    if mode == "native":
        return height, width
    s = _factor(data)
    return max(1, math.floor(height * s + 0.5)), max(1, math.floor(width * s + 0.5))


def to_working(images: tf.Tensor, data: DataConfig | None) -> tf.Tensor:
    """``images [b, h, w, c]`` resized (antialiased bilinear) to the working geometry;
    ``None``: as they are."""
    mode = "native" if data is None else mode_of(data)
    if mode == "native" or (mode == "scale" and _factor(data) == 1.0):
        return images
    if mode == "square":  # a static size: the graph's tiles unroll (ssad.scoring.reconstruct)
        r = data.resolution
        return tf.ensure_shape(resize_antialiased(images, [r, r]), [None, r, r, images.shape[-1]])
    hw = tf.cast(tf.shape(images)[1:3], tf.float64)
    size = tf.maximum(tf.cast(tf.floor(hw * _factor(data) + 0.5), tf.int32), 1)
    return resize_antialiased(images, size)


def resize_antialiased(images: tf.Tensor, size) -> tf.Tensor:
    """``images [b, h, w, c]`` resized to ``size`` ``(h', w')``: the numbers of
    ``tf.image.resize(images, size, "bilinear", antialias=True)`` (to float rounding), as two
    matrix products with that resize's triangle-kernel weights. Plain ops that every exporter
    converts (TensorFlow's own ``ScaleAndTranslate`` op is not)."""
    images = tf.convert_to_tensor(images, tf.float32)
    rows = _triangle_weights(tf.shape(images)[1], size[0])
    cols = _triangle_weights(tf.shape(images)[2], size[1])
    x = tf.einsum("ip,bpqc->biqc", rows, images)
    return tf.einsum("jq,biqc->bijc", cols, x)


def _triangle_weights(n_in, n_out) -> tf.Tensor:
    """``[n_out, n_in]`` weights of an antialiased linear resize along one axis (TensorFlow's
    ``ScaleAndTranslate`` with the triangle kernel): output pixel ``i`` samples the input at
    ``(i + 0.5) * n_in / n_out``, with a kernel widened by the downscaling factor; each row sums
    to 1 (renormalised where the kernel reaches past the border)."""
    n_in = tf.cast(n_in, tf.float32)
    n_out = tf.cast(n_out, tf.float32)
    inv_scale = 1.0 / (n_out / n_in)
    width = tf.maximum(inv_scale, 1.0)  # the kernel's radius in input pixels
    sample = (tf.range(n_out) + 0.5) * inv_scale
    source = tf.range(n_in) + 0.5
    w = tf.nn.relu(1.0 - tf.abs(source[None, :] - sample[:, None]) / width)
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def resolve_resize(data: DataConfig, sizes: list[tuple[int, int]]) -> DataConfig:
    """``data`` with ``auto`` and a missing ``scale`` factor decided from the ``(h, w)`` of the
    training images."""
    if not sizes:
        raise ValueError("resolve_resize needs the sizes of the training images")
    mode = data.resize
    if mode == "auto":
        mode = "square" if len(set(sizes)) == 1 else "scale"
    scale = data.scale
    if mode == "scale" and scale is None:
        scale = data.resolution / float(np.median([min(h, w) for h, w in sizes]))
    return replace(data, resize=mode, scale=scale if mode == "scale" else None)


def describe(data: DataConfig) -> str:
    """One line for logs: what the working geometry does to an image."""
    mode = mode_of(data)
    if mode == "square":
        return f"square: every image resized to {data.resolution}x{data.resolution}"
    if mode == "native":
        return "native: images at their own size"
    return f"scale: every image resized by {_factor(data):.4g}, keeping its aspect"


def _factor(data: DataConfig) -> float:
    if data.scale is None:
        raise ConfigError(
            "data.resize is scale but data.scale is unset; train first (it is chosen from "
            "the training images) or set data.scale"
        )
    return float(data.scale)
