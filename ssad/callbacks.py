"""Keras callbacks that ``ssad.training`` puts around each stage's ``model.fit``.

They share one mutable ``ssad.checkpoint.RunState`` (steps, epochs, history), which the
checkpoint saves so that a killed run can pick up where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ssad.checkpoint import RunState, save_checkpoint
from ssad.errors import SsadError
from ssad.images import encode_png
from ssad.losses import unpack_targets


@dataclass(frozen=True)
class StagePlan:
    """One ``fit`` call: ``steps`` (``None``: bounded by time only) and the run-clock second
    by which the stage must end (``None``: no time limit)."""

    index: int
    crop: int
    batch_size: int
    steps: int | None
    deadline_s: float | None

    @property
    def name(self) -> str:
        return f"stage {self.index + 1} ({self.crop}px crops, batch {self.batch_size})"


def schedule_factor(progress: float, kind: str, warmup: float) -> float:
    """The learning rate's multiplier at ``progress`` (0 to 1) of the run: 1 for
    ``constant``; for ``cosine`` a linear warm-up over the first ``warmup`` of the run, then
    a cosine decay to 0 at its end."""
    if kind == "constant":
        return 1.0
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return (p + 1e-3) / (warmup + 1e-3)
    return 0.5 * (1.0 + math.cos(math.pi * (p - warmup) / (1.0 - warmup)))


class LearningRate(keras.callbacks.Callback):
    """Sets the learning rate before every step from the run's progress: steps done over
    ``train.steps`` or run seconds over ``train.max_minutes``, whichever is further along.
    Both live in the checkpoint, so a resumed run continues the schedule where it stopped.
    Progress is rounded to 1/1000, so that the workers of a multi-worker run, whose clocks
    differ by milliseconds, use the same rate."""

    def __init__(self, state: RunState, train_cfg, clock: Callable[[], float]):
        super().__init__()
        self.state, self.train_cfg, self.clock = state, train_cfg, clock

    def progress(self) -> float:
        t, parts = self.train_cfg, [0.0]
        if t.steps:
            parts.append(self.state.step / t.steps)
        if t.max_minutes:
            parts.append(self.clock() / (60.0 * t.max_minutes))
        return math.floor(1000 * max(parts)) / 1000

    def on_train_batch_begin(self, batch, logs=None):
        t = self.train_cfg
        rate = t.learning_rate * schedule_factor(self.progress(), t.schedule, t.warmup)
        self.model.optimizer.learning_rate.assign(rate)


class StageLimit(keras.callbacks.Callback):
    """Counts steps, stops the stage at its step or time budget and on a NaN/inf loss.

    ``clock()`` gives run seconds. With several workers every worker must stop at the same
    step, so the time check then happens at epoch ends through ``any_worker`` (a collective).
    """

    def __init__(
        self,
        state: RunState,
        plan: StagePlan,
        clock: Callable[[], float],
        checkpoint_path: Path,
        any_worker: Callable[[bool], bool] | None = None,
    ):
        super().__init__()
        self.state, self.plan, self.clock = state, plan, clock
        self.checkpoint_path, self.any_worker = checkpoint_path, any_worker

    def _time_is_up(self) -> bool:
        return self.plan.deadline_s is not None and self.clock() >= self.plan.deadline_s

    def on_train_batch_end(self, batch, logs=None):
        self.state.step += 1
        self.state.stage_steps += 1
        self.check_finite(logs, "loss")
        if self.plan.steps is not None and self.state.stage_steps >= self.plan.steps:
            self.model.stop_training = True
        elif self.any_worker is None and self._time_is_up():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.check_finite(logs, "val_loss")
        if self.any_worker is not None and self.any_worker(self._time_is_up()):
            self.model.stop_training = True

    def check_finite(self, logs, key: str) -> None:
        value = (logs or {}).get(key)
        if value is not None and not math.isfinite(float(value)):
            s = self.state
            raise SsadError(
                f"training diverged: {key} is {float(value)} at step {s.step} "
                f"({self.plan.name}); the last good checkpoint (epoch {s.epoch}) is kept in "
                f"{self.checkpoint_path}. Lower train.learning_rate or check the images."
            )


class Validation(keras.callbacks.Callback):
    """Adds ``val_loss``, the loss on the held-out good images, to each epoch's logs.

    Runs on the local device outside the distribution strategy, so every worker computes the
    same value on the whole validation set.
    """

    def __init__(self, dataset: tf.data.Dataset, loss: keras.losses.Loss):
        super().__init__()
        self.dataset, self.loss = dataset, loss
        self._per_image = None

    def on_epoch_end(self, epoch, logs=None):
        if self._per_image is None:
            model, loss = self.model, self.loss

            @tf.function
            def per_image(x, y):
                return loss.call(y, model(x, training=False))

            self._per_image = per_image
        values = [self._per_image(x, y).numpy() for x, y in self.dataset]
        logs["val_loss"] = float(np.mean(np.concatenate(values)))


class RepairProbe(keras.callbacks.Callback):
    """Adds ``repair_<kind>`` to each epoch's logs: how much of synthetic defects of each kind
    (``ssad.probe``) pasted into held-out good images the model keeps (0: removed, 1:
    reproduced). A model that reproduces a kind of defect cannot show it in its heatmap."""

    def __init__(self, images: np.ndarray, seed: int = 0):
        super().__init__()
        from ssad.probe import synthetic_defects

        self.clean = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        self.defective, self.masks, self.kinds = synthetic_defects(self.clean, seed)

    def on_epoch_end(self, epoch, logs=None):
        from ssad.probe import repair_ratios

        recon = np.concatenate(
            [
                np.asarray(self.model(self.defective[i : i + 8], training=False))
                for i in range(0, len(self.defective), 8)
            ]
        )
        ratios = repair_ratios(recon, self.clean, self.defective, self.masks, self.kinds)
        logs.update({f"repair_{kind}": value for kind, value in ratios.items()})


class Summaries(keras.callbacks.Callback):
    """TensorBoard logs without the ``tensorboard`` package: each epoch's ``loss`` and
    ``val_loss`` and a few distorted inputs, originals and reconstructions, at the run's step.
    """

    def __init__(self, log_dir: Path, batch, state: RunState, count: int = 3):
        super().__init__()
        x_hat, y = batch
        x, _, _ = unpack_targets(y[:count])
        self.inputs, self.originals = x_hat[:count], x
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        recon = self.model(self.inputs, training=False)
        step = self.state.step
        with self.writer.as_default():
            for key, value in (logs or {}).items():
                if key in ("loss", "val_loss") or key.startswith("repair_"):
                    tf.summary.write(key, float(value), step, metadata=_SCALAR)
            for tag, images in (
                ("distorted_input", self.inputs),
                ("original", self.originals),
                ("reconstruction", recon),
            ):
                tf.summary.write(tag, _image_blobs(np.asarray(images)), step, metadata=_IMAGE)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


def _summary_metadata(plugin: str, data_class: int) -> bytes:
    meta = summary_pb2.SummaryMetadata(data_class=data_class)
    meta.plugin_data.plugin_name = plugin
    return meta.SerializeToString()


_SCALAR = _summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
_IMAGE = _summary_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def _image_blobs(images: np.ndarray) -> tf.Tensor:
    """TensorBoard's image summary: ``[width, height, png, png, ...]`` as strings."""
    h, w = images.shape[1:3]
    return tf.constant([str(w).encode(), str(h).encode()] + [encode_png(x) for x in images])


class StageProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, with epoch headers that name the stage."""

    def __init__(self, plan: StagePlan, epochs: int | None):
        super().__init__()
        self.plan, self.stage_epochs = plan, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if self.verbose:
            total = self.stage_epochs if self.stage_epochs is not None else "?"
            print(f"{self.plan.name}: epoch {epoch + 1}/{total}", flush=True)


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: record the epoch in ``state.history`` and save model weights,
    optimizer state and ``state`` to one ``.npz`` file (atomically; only where ``write``)."""

    def __init__(self, path: Path, state: RunState, plan: StagePlan, clock, write: bool):
        super().__init__()
        self.path, self.state, self.plan, self.clock, self.write = path, state, plan, clock, write

    def on_epoch_end(self, epoch, logs=None):
        s = self.state
        s.epoch += 1
        s.elapsed_s = self.clock()
        row = {"stage": self.plan.index + 1, "crop": self.plan.crop}
        row |= {"batch_size": self.plan.batch_size, "epoch": s.epoch, "step": s.step}
        logged = {k: float(v) for k, v in (logs or {}).items()}
        row |= {k: v for k, v in logged.items() if k in ("loss", "val_loss")}
        row |= {k: round(v, 4) for k, v in logged.items() if k.startswith("repair_")}
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        row["learning_rate"] = float(rate)  # of the epoch's last step
        row["elapsed_s"] = round(s.elapsed_s, 3)
        s.history.append(row)
        save_checkpoint(self.path, self.model, s, self.write)
