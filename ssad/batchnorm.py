"""Batch normalisation: the fused layer the model is built with, and its statistics for
inference recomputed after training ("precise BN").

``FusedBatchNormalization`` computes what Keras' ``BatchNormalization`` computes, in one
oneDNN kernel per pass instead of a dozen element-wise ops (Keras 3 has no fused path). Under a
bfloat16 policy it normalises in float32, between two casts: TensorFlow's bfloat16 fused
kernel was no faster on our CPU than Keras' ops. ``tools/benchmark.py train`` measures the
gain (it sets ``FUSE = False`` to time Keras' path).

Keras keeps an exponential moving average of each BatchNormalization layer's batch statistics.
After a short CPU budget of a few hundred steps that average still remembers earlier weights,
and the deep stack of normalised layers amplifies the mismatch: on the bottle data, models
reconstructed far worse in inference mode than in training mode (the closing note of the
benchmarks issue has the figures). Recomputing the statistics with the final weights closes
that gap; ``tests/test_batchnorm.py`` checks that it gives the exact statistics.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Run the fused kernel; ``tools/benchmark.py train`` turns it off to measure the gain.
FUSE = True


@keras.saving.register_keras_serializable(package="ssad")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` over the last axis of 4-D inputs, fused.

    Same weights, configuration, moving-average update and results (to float rounding; other
    inputs, masks, renormalisation and synchronised statistics take Keras' own path). The
    kernel returns the unbiased batch variance; the moving variance keeps Keras' biased one.
    """

    def call(self, inputs, training=None, mask=None):
        keras_path = not FUSE or mask is not None or self.renorm or self.synchronized
        if keras_path or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = tf.shape(self.moving_mean)
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones(channels)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros(channels)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, epsilon=self.epsilon, is_training=True
            )
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (n - 1.0) / n
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                scale,
                offset,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


def recalibrate_batch_norm(
    model: keras.Model, images, *, batch_size: int = 8, batches: int = 32, seed: int = 0
) -> int:
    """Replace the moving statistics of every BatchNormalization layer of ``model`` by the
    plain average of their batch statistics over ``batches`` random batches of ``images``
    (``[n, h, w, 3]``, uint8 or float in [0, 1]; or a list of images of several sizes, then
    each batch is one whole image); the number of batches used.

    Runs the model in training mode (so each layer normalises with its batch's statistics,
    as during training) with the momentum set to ``(k - 1) / k`` on the k-th batch, which
    makes the moving average the cumulative mean. Trainable weights are not touched.
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return 0
    one_by_one = not isinstance(images, np.ndarray)
    batch_size = 1 if one_by_one else min(batch_size, len(images))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images)) if one_by_one else None
    momenta = [layer.momentum for layer in bns]
    try:
        for k in range(1, batches + 1):
            for layer in bns:
                layer.momentum = (k - 1) / k
            if one_by_one:  # a random order, each image once before any repeats
                chosen = [order[(k - 1) % len(images)]]
            else:
                chosen = rng.choice(len(images), batch_size, replace=False)
            x = np.stack([images[i] for i in chosen])
            x = x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")
            model(x, training=True)
    finally:
        for layer, momentum in zip(bns, momenta, strict=True):
            layer.momentum = momentum
    return batches
