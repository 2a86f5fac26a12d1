"""The ``tf.data`` pipelines that feed ``model.fit``: ``(x_hat, pack_targets(x, x_hat, mask))``.

Training: decoded images (uint8, at the working geometry of ``ssad.data.geometry``) held in
memory or in a tf.data file cache -> repeat -> shuffle -> a random crop of ``crop_size`` inside
the image, at the working pixel scale (this is what makes progressive sizes possible) ->
90-degree rotations and flips as configured -> batch -> distortion (batched, which is much
faster than per image) -> targets -> prefetch. Every random choice is stateless, seeded from
``seed`` and the element's index, so a seed gives the same stream every time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ssad.config import Config
from ssad.data.distort import distort as distort_batch
from ssad.data.geometry import resolve_resize, working_size
from ssad.data.readers import load_working_images, read_working, training_image_paths
from ssad.errors import BadImageError
from ssad.images import image_size
from ssad.losses import pack_targets

_SHUFFLE_BUFFER = 256  # images


def train_dataset(
    source,
    config: Config,
    crop_size: int,
    batch_size: int,
    *,
    seed: int = 0,
    distort: bool = True,
) -> tf.data.Dataset:
    """An endless stream of float32 batches ``(x_hat [b, c, c, 3], targets [b, c, c, 9])``.

    ``source``: a folder or list of image files (read at the working geometry of
    ``config.data``), an array ``[n, h, w, 3]`` or a list of arrays ``[h, w, 3]`` (any sizes)
    already at the working geometry (uint8, or float in [0, 1]). Crops never cross an image's
    border, so every image's smaller side must be at least ``crop_size``.
    ``distort=False`` (or ``distortion.kind == "none"``) gives x_hat = x and a zero mask.
    """
    images, count, smallest = _image_dataset(source, config)
    _check_crop(crop_size, smallest)
    ds = images.repeat().shuffle(
        min(count, _SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=False
    )
    ds = ds.enumerate().map(
        lambda i, image: _augment(image, crop_size, config, tf.stack([seed, i])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _finish(ds.batch(batch_size, drop_remainder=True), config, seed, distort)


def validation_dataset(
    images,
    config: Config,
    crop_size: int,
    batch_size: int,
    *,
    seed: int = 0,
    distort: bool = True,
) -> tf.data.Dataset:
    """One pass over ``images`` (``[n, h, w, 3]`` or a list of ``[h, w, 3]``): centre crops of
    ``crop_size`` with the same distortions every time it is iterated; same elements as
    ``train_dataset``."""
    crops = centre_crops(images, crop_size)
    ds = tf.data.Dataset.from_tensor_slices(crops).map(_to_float)
    return _finish(ds.batch(batch_size), config, seed, distort)


def centre_crops(images, crop_size: int) -> np.ndarray:
    """Centre crops ``[n, c, c, 3]`` of ``images`` (an array or a list of any sizes)."""
    _check_crop(crop_size, min(min(x.shape[:2]) for x in images))
    crops = []
    for x in images:
        top, left = (x.shape[0] - crop_size) // 2, (x.shape[1] - crop_size) // 2
        crops.append(x[top : top + crop_size, left : left + crop_size])
    return np.stack(crops)


def _image_dataset(source, config: Config) -> tuple[tf.data.Dataset, int, int]:
    """The decoded working-geometry images, cached as configured, their count and the
    smallest side among them."""
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3:
            raise ValueError(f"expected images [n, h, w, 3], got {source.shape}")
        return tf.data.Dataset.from_tensor_slices(source), len(source), min(source.shape[1:3])
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], np.ndarray):
        return _ragged(source), len(source), min(min(x.shape[:2]) for x in source)
    paths = training_image_paths(source)
    if config.data.cache == "memory":
        images, _, _, skipped = load_working_images(paths, config.data, config.data.on_bad)
        for bad in skipped:  # a dataset cannot return them: say so
            warnings.warn(f"skipping {bad}", stacklevel=3)
        return _image_dataset(images, config)
    sizes = [image_size(p) for p in paths]
    data = resolve_resize(config.data, sizes)
    smallest = min(min(working_size(h, w, data)) for h, w in sizes)
    return _file_cached(paths, data, config), len(paths), smallest


def _ragged(images: Sequence[np.ndarray]) -> tf.data.Dataset:
    """Images of different sizes as one dataset (their pixels in one ragged tensor)."""
    pixels = tf.RaggedTensor.from_row_lengths(
        np.concatenate([x.reshape(-1, 3) for x in images]),
        [x.shape[0] * x.shape[1] for x in images],
    )
    shapes = np.array([x.shape[:2] for x in images], np.int64)
    ds = tf.data.Dataset.from_tensor_slices((pixels, shapes))
    return ds.map(lambda p, hw: tf.reshape(p, [hw[0], hw[1], 3]))


def _file_cached(paths: Sequence[os.PathLike], data, config: Config) -> tf.data.Dataset:
    """Images decoded one at a time on the first pass, then read from the file cache named by
    ``config.data.cache`` (reused by later runs while the file exists)."""

    def decoded():
        for path in paths:
            try:
                yield read_working(path, data)
            except BadImageError as e:
                if config.data.on_bad == "error":
                    raise
                warnings.warn(f"skipping {e}", stacklevel=2)

    spec = tf.TensorSpec((None, None, 3), tf.uint8)
    return tf.data.Dataset.from_generator(decoded, output_signature=spec).cache(config.data.cache)


def _check_crop(crop_size: int, smallest: int) -> None:
    if not 8 <= crop_size <= smallest or crop_size % 8:
        raise ValueError(
            f"crop_size must be a multiple of 8 in [8, {smallest}] (the smallest image side), "
            f"got {crop_size}"
        )


def _to_float(image):
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _augment(image, crop_size: int, config: Config, seed):
    """A random crop, then random 90-degree rotations and flips as ``config.data`` says."""
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    image = tf.image.stateless_random_crop(image, (crop_size, crop_size, 3), s[0])
    if config.data.rotate:
        image = tf.image.rot90(image, tf.random.stateless_uniform([], s[1], 0, 4, tf.int32))
    if config.data.flip:
        image = tf.image.stateless_random_flip_left_right(image, s[2])
        image = tf.image.stateless_random_flip_up_down(image, s[3])
    return _to_float(image)


def _finish(batches: tf.data.Dataset, config: Config, seed: int, distort: bool):
    """Distort each batch (seeded by its index) and pack the targets; prefetch."""
    res = config.data.resolution  # distortion sizes are in pixels at 256: scaled to this

    def corrupt(i, x):
        if distort and config.distortion.kind != "none":
            x_hat, mask = distort_batch(x, config.distortion, tf.stack([seed, i]), res)
        else:
            x_hat, mask = x, tf.zeros_like(x)
        return x_hat, pack_targets(x, x_hat, mask)

    ds = batches.enumerate().map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
