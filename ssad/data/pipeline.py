"""The ``tf.data`` pipelines that feed ``model.fit``: ``(x_hat, pack_targets(x, x_hat, mask))``.

Training: decoded images (uint8, working resolution) held in memory or in a tf.data file
cache -> repeat -> shuffle -> a random crop of ``crop_size`` at the working resolution's pixel
scale (this is what makes progressive sizes possible) -> 90-degree rotations and flips as
configured -> batch -> distortion (batched, which is much faster than per image) -> targets ->
prefetch. Every random choice is stateless, seeded from ``seed`` and the element's index, so a
seed gives the same stream every time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ssad.config import Config
from ssad.data.distort import distort as distort_batch
from ssad.data.readers import load_images, training_image_paths
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

    ``source``: a folder or list of image files (read at ``config.data.resolution``), or an
    array ``[n, res, res, 3]`` already at the working resolution (uint8, or float in [0, 1]).
    ``distort=False`` (or ``distortion.kind == "none"``) gives x_hat = x and a zero mask.
    """
    images, count = _image_dataset(source, config)
    res = config.data.resolution
    _check_crop(crop_size, res)
    ds = images.repeat().shuffle(
        min(count, _SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=False
    )
    ds = ds.enumerate().map(
        lambda i, image: _augment(image, crop_size, config, tf.stack([seed, i])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _finish(ds.batch(batch_size, drop_remainder=True), config, seed, distort)


def validation_dataset(
    images: np.ndarray,
    config: Config,
    crop_size: int,
    batch_size: int,
    *,
    seed: int = 0,
    distort: bool = True,
) -> tf.data.Dataset:
    """One pass over ``images`` ``[n, res, res, 3]``: centre crops of ``crop_size`` with the
    same distortions every time it is iterated; same elements as ``train_dataset``."""
    _check_crop(crop_size, images.shape[1])
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda image: _to_float(_centre_crop(image, crop_size)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _finish(ds.batch(batch_size), config, seed, distort)


def _image_dataset(source, config: Config) -> tuple[tf.data.Dataset, int]:
    """The decoded working-resolution images, cached as configured, and their count."""
    res = config.data.resolution
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[1:] != (res, res, 3):
            raise ValueError(f"expected images [n, {res}, {res}, 3], got {source.shape}")
        return tf.data.Dataset.from_tensor_slices(source), len(source)
    paths = training_image_paths(source)
    if config.data.cache == "memory":
        images, _ = load_images(paths, res, config.data.on_bad_image)
        return tf.data.Dataset.from_tensor_slices(images), len(images)
    return _file_cached(paths, res, config), len(paths)


def _file_cached(paths: Sequence[os.PathLike], res: int, config: Config) -> tf.data.Dataset:
    """Images decoded one at a time on the first pass, then read from the file cache named by
    ``config.data.cache`` (reused by later runs while the file exists)."""

    def decoded():
        for path in paths:
            images, _ = load_images([path], res, config.data.on_bad_image)
            yield from images

    spec = tf.TensorSpec((res, res, 3), tf.uint8)
    return tf.data.Dataset.from_generator(decoded, output_signature=spec).cache(config.data.cache)


def _check_crop(crop_size: int, res: int) -> None:
    if not 8 <= crop_size <= res or crop_size % 8:
        raise ValueError(f"crop_size must be a multiple of 8 in [8, {res}], got {crop_size}")


def _to_float(image):
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _centre_crop(image, crop_size: int):
    top = (tf.shape(image)[0] - crop_size) // 2
    left = (tf.shape(image)[1] - crop_size) // 2
    return image[top : top + crop_size, left : left + crop_size]


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
    res = config.data.resolution

    def corrupt(i, x):
        if distort and config.distortion.kind != "none":
            x_hat, mask = distort_batch(x, config.distortion, tf.stack([seed, i]), res)
        else:
            x_hat, mask = x, tf.zeros_like(x)
        return x_hat, pack_targets(x, x_hat, mask)

    ds = batches.enumerate().map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
