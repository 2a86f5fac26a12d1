"""Training: ``train(config, data, run_dir)`` turns defect-free images into a run directory.

A run is a schedule of stages (``config.train.stages``), each one ``model.fit`` on random crops
of one side, the weights carried over. ``train.steps`` and ``train.max_minutes`` are split over
the stages by their ``fraction``; either bound may be ``None``. An epoch is
``train.steps_per_epoch`` steps and ends with a validation loss on held-out good images and a
checkpoint (``ssad.checkpoint``), from which a killed run resumes; a finished run bounded by
time trains on when resumed with a larger ``train.max_minutes`` (in the stage due at its
clock). What the run directory holds: ``ssad.run``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ssad import distribute
from ssad.batchnorm import recalibrate_batch_norm
from ssad.calibration import calibrate_on_good
from ssad.callbacks import (
    Checkpoint,
    LearningRate,
    RepairProbe,
    StageLimit,
    StagePlan,
    StageProgbar,
    Summaries,
    Validation,
)
from ssad.checkpoint import RunState, load_checkpoint, run_clock, save_checkpoint
from ssad.config import Config
from ssad.data import train_dataset, validation_dataset
from ssad.data.geometry import describe
from ssad.data.pipeline import centre_crops
from ssad.data.readers import load_working_images, training_image_paths
from ssad.detection import Detector
from ssad.errors import BadImageError, ConfigError, DataError, RunDirError, SsadError
from ssad.images import read_image
from ssad.losses import objective_for
from ssad.model import build_autoencoder, init_output_bias
from ssad.precision import POLICIES, resolve_precision
from ssad.progress import fit_verbose
from ssad.run import Calibration, RunDir

_RESUME_MAY_CHANGE = ("train.max_minutes", "train.strategy")  # a resumed run may change these


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` did; ``summary()`` is the text the CLI prints."""

    run: RunDir
    model: keras.Model
    config: Config
    steps: int
    epochs: int
    seconds: float
    loss: float | None
    val_loss: float | None
    resumed_from_epoch: int | None  # epochs already done when this session started
    calibration: Calibration
    repair: dict  # the repair probe's last ratios per defect kind
    skipped: list[BadImageError]  # unreadable training images (data.on_bad = "skip")

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def summary(self) -> str:
        def num(x):
            return "-" if x is None else f"{x:.5g}"

        resumed = (
            f" (resumed after epoch {self.resumed_from_epoch})" if self.resumed_from_epoch else ""
        )
        c = self.calibration
        lines = [
            f"trained {self.steps} steps in {self.epochs} epochs, "
            f"{self.seconds / 60:.1f} min{resumed}",
            f"final loss {num(self.loss)}, validation loss {num(self.val_loss)}",
        ]
        if self.repair:
            kept = ", ".join(f"{k} {v:.2f}" for k, v in self.repair.items())
            lines.append(f"repair probe, share of synthetic defects kept (0 best): {kept}")
        image = f", image score by {c.image_normalize}" if c.image_normalize else ""
        lines += [
            f"thresholds: pixel {num(c.pixel_threshold)}, image {num(c.image_threshold)} "
            f"({c.method}, {c.n_images} held-out images, normalisation {c.normalize}{image})",
        ]
        r = self.run
        for path in (r.model_path, r.config_path, r.history_path, r.calibration_path):
            lines.append(f"  {path}")
        lines.append(f"  TensorBoard: tensorboard --logdir {r.logs_path}")
        return "\n".join(lines)


def training_config(
    base: Config,
    *,
    objective: int | None = None,
    lam: float | None = None,
    image_size: int | None = None,
    resize: str | None = None,
    steps: int | None = None,
    max_minutes: float | None = None,
    batch_size: int | None = None,
    mixed_precision: str | None = None,
    strategy: str | None = None,
    seed: int | None = None,
) -> Config:
    """``base`` with the ``ssad train`` options applied (``None`` keeps the base value).

    ``image_size`` sets ``data.resolution`` and scales every stage's crop by the same factor
    (multiples of 8, at most the new resolution); ``batch_size`` replaces every stage's batch.
    ``max_minutes`` without ``steps`` lifts the step bound: the run trains for that long.
    """
    cfg = base.override(
        {
            "train.objective": objective,
            "train.lam": lam,
            "train.steps": steps,
            "train.max_minutes": max_minutes,
            "train.mixed_precision": mixed_precision,
            "train.strategy": strategy,
            "train.seed": seed,
            "data.resize": resize,
        }
    )
    stages, data = cfg.train.stages, cfg.data
    if image_size is not None:
        if image_size < 8 or image_size % 8:
            raise ConfigError(f"--image-size must be a multiple of 8, got {image_size}")
        scale = image_size / data.resolution
        stages = tuple(
            replace(s, crop=min(image_size, max(8, 8 * round(s.crop * scale / 8)))) for s in stages
        )
        data = replace(data, resolution=image_size)
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        stages = tuple(replace(s, batch_size=batch_size) for s in stages)
    t = cfg.train
    if max_minutes is not None and steps is None:
        t = replace(t, steps=None)
    return replace(cfg, data=data, train=replace(t, stages=stages))


def plan_stages(cfg: Config) -> list[StagePlan]:
    """Each stage's share of ``train.steps`` (largest remainders, summing exactly) and its
    deadline on the run clock (cumulative shares of ``train.max_minutes``)."""
    t = cfg.train
    if t.steps is None and t.max_minutes is None:
        raise ConfigError(
            "train.steps and train.max_minutes are both unset: nothing bounds the run"
        )
    if t.steps is not None and t.steps < 1:
        raise ConfigError(f"train.steps must be >= 1, got {t.steps}")
    if t.max_minutes is not None and t.max_minutes <= 0:
        raise ConfigError(f"train.max_minutes must be > 0, got {t.max_minutes}")
    total = sum(s.fraction for s in t.stages)
    shares = [s.fraction / total for s in t.stages]
    steps: list[int | None] = [None] * len(shares)
    if t.steps is not None:
        exact = [t.steps * f for f in shares]
        steps = [int(e) for e in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: (steps[i] - exact[i], i))
        for i in by_remainder[: t.steps - sum(steps)]:
            steps[i] += 1
    plans, cumulative = [], 0.0
    for i, (stage, share) in enumerate(zip(t.stages, shares, strict=True)):
        cumulative += share
        deadline = None if t.max_minutes is None else 60.0 * t.max_minutes * cumulative
        plans.append(StagePlan(i, stage.crop, stage.batch_size, steps[i], deadline))
    return [p for p in plans if p.steps != 0]


def train(
    config: Config,
    data,
    run_dir: str | os.PathLike,
    *,
    resume: bool = True,
    deterministic: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> RunResult:
    """Train an autoencoder on the defect-free images ``data`` and write ``run_dir``.

    ``data``: an MVTec AD category folder, a folder of images or a list of image files.
    ``resume``: continue from the run's checkpoint when a killed run left one (otherwise
    start over); a finished run goes on only when ``train.max_minutes`` grew.
    ``deterministic``: enable TensorFlow op determinism, so the same ``train.seed`` gives
    identical weights. ``callbacks`` run after ssad's own in every stage.
    Raises ``SsadError`` on bad data or config, a finished run in ``run_dir`` (unless its
    budget grew), or a NaN loss.
    """
    plans = plan_stages(config)  # a bad budget fails before anything starts
    # the strategy first: a multi-worker one must configure TensorFlow before any device query
    strategy = distribute.make_strategy(config.train.strategy)
    run = RunDir(run_dir)
    cfg = _resolve(config, run if resume else None, verbose)
    chief = distribute.is_chief(strategy)
    _refuse_finished_run(run, cfg, resume)
    if chief:
        run.path.mkdir(parents=True, exist_ok=True)  # an unusable --out fails before reading

    images, cfg, paths, skipped = _load_images(data, cfg, verbose)
    plans = _fit_crops(plans, min(min(x.shape[:2]) for x in images))
    run.prepare(cfg, resume, _RESUME_MAY_CHANGE, write=chief)
    keras.utils.set_random_seed(cfg.train.seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    kept, heldout = _validation_order(len(images), cfg.data.validation_fraction, cfg.train.seed)
    train_images, val_images = _take(images, kept), _take(images, heldout)

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[cfg.train.mixed_precision])
    state = RunState()
    try:
        model = _build_model(cfg, strategy, train_images)
        state = _start_state(run, model, plans, resume)
        resumed_from = state.epoch if state.step else None
        if verbose and resumed_from is not None:
            print(f"resuming {run} after epoch {state.epoch} (step {state.step})", flush=True)
        session = _Session(
            cfg, model, strategy, chief, run, state, run_clock(state.elapsed_s), train_images,
            val_images, model.loss, callbacks, verbose,
        )  # fmt: skip
        for plan in plans:
            if plan.index >= state.stage:
                _fit_stage(session, plan)
                state.stage, state.stage_steps = plan.index + 1, 0
                save_checkpoint(run.checkpoint_path, model, state, chief)
        state.elapsed_s = session.clock()
    except KeyboardInterrupt:
        if verbose:
            print(
                f"\ninterrupted; the last checkpoint (epoch {state.epoch}) is in "
                f"{run.checkpoint_path}: run the same command again to resume",
                flush=True,
            )
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    final, calibration = _finalise(session, [paths[i] for i in heldout])
    last = state.history[-1] if state.history else {}
    return RunResult(
        run=run,
        model=final,
        config=cfg,
        steps=state.step,
        epochs=state.epoch,
        seconds=state.elapsed_s,
        loss=last.get("loss"),
        val_loss=last.get("val_loss"),
        resumed_from_epoch=resumed_from,
        calibration=calibration,
        repair={k[7:]: v for k, v in last.items() if k.startswith("repair_")},
        skipped=skipped,
    )


def _resolve(config: Config, resumed: RunDir | None, verbose: int) -> Config:
    """``config`` with ``train.mixed_precision`` (``auto``: from the hardware) and
    ``train.lam`` resolved, as config.json records them. An unset lambda is the objective's
    default, or the value of the run ``resumed`` (when it has a checkpoint to resume)."""
    precision, why = resolve_precision(config.train.mixed_precision)
    if verbose and why != "as configured":
        print(f"mixed precision: {precision} ({why})", flush=True)
    lam = config.train.weight
    if config.train.lam is None and resumed is not None and resumed.checkpoint_path.exists():
        with contextlib.suppress(SsadError):  # no readable config: prepare() tells
            lam = resumed.read_config().train.weight
    return replace(config, train=replace(config.train, mixed_precision=precision, lam=lam))


def _load_images(data, cfg: Config, verbose: int):
    """``(images, cfg, paths, skipped)``: the training images at the working geometry, the
    config with that geometry resolved (``data.resize``, ``data.scale``), the files read and
    the unreadable ones."""
    images, geometry, paths, skipped = load_working_images(
        training_image_paths(data), cfg.data, cfg.data.on_bad
    )
    if verbose:
        print(f"working geometry: {describe(geometry)}", flush=True)
    return images, replace(cfg, data=geometry), paths, skipped


def _build_model(cfg: Config, strategy: tf.distribute.Strategy, train_images) -> keras.Model:
    """The autoencoder, compiled with the objective and its optimizer built, in ``strategy``."""
    loss = objective_for(cfg.train.objective, cfg.train.weight, cfg.train.norm)
    with strategy.scope():
        model = build_autoencoder(cfg.model)
        init_output_bias(model, _mean_colour(train_images))
        model = distribute.for_strategy(model, strategy)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate), loss=loss)
        model.optimizer.build(model.trainable_variables)
    distribute.after_compile(model, strategy)
    return model


def _start_state(run: RunDir, model: keras.Model, plans: list[StagePlan], resume: bool):
    """A fresh :class:`RunState`, or the checkpoint's (loaded into ``model``); a finished
    run given a longer budget goes on in the stage due by its clock."""
    state = RunState()
    if resume and run.checkpoint_path.exists():
        state = load_checkpoint(run.checkpoint_path, model)
    if state.done:
        due = [p.index for p in plans if p.deadline_s > state.elapsed_s]
        state.done, state.stage, state.stage_steps = False, due[0], 0
    return state


def _finalise(session: _Session, heldout_paths: list[Path]) -> tuple[keras.Model, Calibration]:
    """The float32 model with exact batch-norm statistics, calibrated on the held-out images
    (read at their own size, as a user's images arrive); the chief writes the run's files."""
    cfg, state, run = session.cfg, session.state, session.run
    final = build_autoencoder(cfg.model)  # float32, outside the strategy
    final.set_weights(session.model.get_weights())
    recalibrate_batch_norm(final, session.train_images, seed=cfg.train.seed)  # whole images
    heldout = [read_image(p) for p in heldout_paths]
    calibration, statistics = calibrate_on_good(Detector(final, cfg), heldout)
    if session.chief:
        run.write_model(final)
        run.write_history(state.history)
        run.write_heldout(heldout_paths)
        run.write_calibration(calibration, statistics)
        state.done = True
        save_checkpoint(run.checkpoint_path, session.model, state, session.chief)
    return final, calibration


@dataclass
class _Session:
    """What the stages of one :func:`train` call share."""

    cfg: Config
    model: keras.Model
    strategy: tf.distribute.Strategy
    chief: bool
    run: RunDir
    state: RunState
    clock: Callable[[], float]
    train_images: np.ndarray
    val_images: np.ndarray
    loss: keras.losses.Loss
    callbacks: Sequence[keras.callbacks.Callback]
    verbose: int


def _fit_stage(session: _Session, plan: StagePlan) -> None:
    """One stage: ``model.fit`` on ``plan.crop`` crops until its step or time budget."""
    cfg, state, strategy, run = session.cfg, session.state, session.strategy, session.run
    distort = cfg.train.objective != 0
    replicas = strategy.num_replicas_in_sync
    if plan.batch_size % replicas:
        raise ConfigError(
            f"stage {plan.index + 1}: batch size {plan.batch_size} is not a multiple of the "
            f"{replicas} replicas (set --batch-size)"
        )
    start = state.stage_steps if state.stage == plan.index else 0
    state.stage, state.stage_steps = plan.index, start
    seed = cfg.train.seed + 1009 * plan.index + start

    def per_replica(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(plan.batch_size)
        pipeline_seed = seed + 7919 * context.input_pipeline_id
        return train_dataset(
            session.train_images, cfg, plan.crop, batch, seed=pipeline_seed, distort=distort
        )

    dataset = strategy.distribute_datasets_from_function(per_replica)
    val = validation_dataset(
        session.val_images, cfg, plan.crop, plan.batch_size, seed=cfg.train.seed, distort=distort
    )
    spe = min(cfg.train.steps_per_epoch, plan.steps or cfg.train.steps_per_epoch)
    done_epochs = start // spe
    epochs = None if plan.steps is None else done_epochs + math.ceil((plan.steps - start) / spe)
    limit = StageLimit(
        state, plan, session.clock, run.checkpoint_path, distribute.any_worker(strategy)
    )
    probe = RepairProbe(centre_crops(session.val_images[:10], plan.crop), seed=cfg.train.seed)
    cbs = [LearningRate(state, cfg.train, session.clock), limit, Validation(val, session.loss)]
    cbs.append(probe)
    if cfg.train.patience:
        cbs.append(
            keras.callbacks.EarlyStopping(patience=cfg.train.patience, restore_best_weights=True)
        )
    cbs += distribute.epoch_callbacks(strategy)
    cbs.append(Checkpoint(run.checkpoint_path, state, plan, session.clock, session.chief))
    if session.chief:
        log_dir = run.logs_path / f"stage{plan.index + 1}_{plan.crop}px"
        cbs.append(Summaries(log_dir, next(iter(val)), state))
    cbs.append(StageProgbar(plan, epochs))
    if session.verbose:
        budget = [f"{plan.steps} steps"] if plan.steps is not None else []
        if plan.deadline_s is not None:
            budget.append(f"until {plan.deadline_s / 60:.1f} min")
        print(f"{plan.name}: {' or '.join(budget)}", flush=True)
    with strategy.scope():
        session.model.fit(
            dataset,
            epochs=epochs if epochs is not None else 2**31 - 1,
            initial_epoch=done_epochs,
            steps_per_epoch=spe,
            callbacks=cbs + list(session.callbacks),
            shuffle=False,
            verbose=fit_verbose(session.verbose),
        )


def split_validation(
    images: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)``: a seeded random ``fraction`` of ``images`` held out, at least
    one image in each part."""
    train, val = _validation_order(len(images), fraction, seed)
    return images[train], images[val]


def _validation_order(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(train, validation)`` of :func:`split_validation`."""
    if n < 2:
        raise DataError(
            f"training needs at least 2 good images (1 is held out for validation), got {n}"
        )
    n_val = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _take(images, index: np.ndarray):
    """``images[index]`` for an array or a list."""
    return images[index] if isinstance(images, np.ndarray) else [images[i] for i in index]


def _fit_crops(plans: list[StagePlan], smallest: int) -> list[StagePlan]:
    """``plans`` with each stage crop clipped to the smallest image side (a warning each):
    crops never cross an image's border."""
    fitted = []
    for plan in plans:
        if plan.crop > smallest:
            crop = smallest // 8 * 8
            warnings.warn(
                f"{plan.name}: the smallest training image has a side of {smallest} px at the "
                f"working scale; this stage trains on {crop}px crops instead",
                stacklevel=3,
            )
            plan = replace(plan, crop=crop)
        fitted.append(plan)
    return fitted


def _mean_colour(images) -> np.ndarray:
    """Mean RGB in [0, 1] over all pixels of ``images`` (an array or a list of any sizes)."""
    total = sum(x.reshape(-1, 3).astype(np.float64).sum(axis=0) for x in images)
    return total / sum(x.shape[0] * x.shape[1] for x in images) / 255.0


def _refuse_finished_run(run: RunDir, cfg: Config, resume: bool) -> None:
    """Raise ``RunDirError`` when ``run`` holds a finished run that ``cfg`` does not give a
    longer time budget."""
    state = run.read_state() if resume else None
    if state is not None and state.done:
        t = cfg.train
        longer = t.steps is None and t.max_minutes is not None
        if not (longer and 60.0 * t.max_minutes > state.elapsed_s):
            raise RunDirError(
                f"{run} holds a finished run ({state.elapsed_s / 60:.1f} min of training); "
                "give a larger --max-minutes (and no --steps) to train it longer, or choose "
                "another --out"
            )
