"""Training on several devices or machines: ``train.strategy`` = default | mirrored |
multiworker, and the work-arounds Keras 3 needs for several workers.

Under a multi-worker strategy every worker trains, one (the chief) writes the run directory,
all stop at the same step and average their batch-norm statistics at every epoch end.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import tensorflow as tf

from ssad.errors import ConfigError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name``; create it before any device query (a
    multi-worker strategy must configure TensorFlow first)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if "TF_CONFIG" not in os.environ:
        raise ConfigError(
            "--strategy multiworker needs the TF_CONFIG environment variable on every worker "
            "(see docs/training.md, Training on several machines)"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The one worker that writes the run directory (all do under a local strategy)."""
    if not is_multiworker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def any_worker(strategy: tf.distribute.Strategy) -> Callable[[bool], bool] | None:
    """``any_worker(flag)``: True when ``flag`` is True on any worker (a collective call);
    ``None`` under a local strategy, where no agreement is needed."""
    if not is_multiworker(strategy):
        return None

    @tf.function
    def count(flag):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: flag), axis=None)

    return lambda flag: bool(count(tf.constant(1.0 if flag else 0.0)) > 0)


def for_strategy(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """``model`` (built in ``strategy.scope()``) ready to be compiled there: under several
    workers, a model whose step logs have shape ``[1]`` (:class:`_MultiWorkerModel`)."""
    if not is_multiworker(strategy):
        return model
    return _MultiWorkerModel(model.inputs, model.outputs, name=model.name)


def after_compile(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Keras 3 fails to pre-build a model of several workers (keras-team/keras#20585): forget
    the strategy captured at creation; ``fit`` runs in the strategy's scope."""
    if is_multiworker(strategy):
        model._distribute_strategy = None


def epoch_callbacks(strategy: tf.distribute.Strategy) -> list[keras.callbacks.Callback]:
    """What a stage's ``fit`` needs under ``strategy``: the statistics sync for several
    workers, nothing else."""
    return [SyncStatistics(strategy)] if is_multiworker(strategy) else []


class _MultiWorkerModel(keras.Model):
    """The autoencoder with step logs of shape ``[1]``: Keras 3's ``fit`` averages the logs
    of several workers along an axis that scalars lack (keras-team/keras#20585)."""

    def train_step(self, data):
        return {k: keras.ops.reshape(v, (1,)) for k, v in super().train_step(data).items()}


class SyncStatistics(keras.callbacks.Callback):
    """Averages the non-trainable variables (batch-norm moving statistics, which each worker
    updates from its own batches) over all replicas at every epoch end, so that the workers
    of a multi-worker run checkpoint and finish with equal weights."""

    def __init__(self, strategy: tf.distribute.Strategy):
        super().__init__()
        self.strategy = strategy
        self._sync = None

    def on_epoch_end(self, epoch, logs=None):
        if self._sync is None:
            strategy, variables = self.strategy, self.model.non_trainable_variables

            @tf.function
            def sync():
                local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
                for v, value in zip(variables, local, strict=True):
                    v.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

            self._sync = sync
        self._sync()
