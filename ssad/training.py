"""Training: ``train(config, data, run_dir)`` turns defect-free images into a run directory.

A run is a schedule of stages (``config.train.stages``), each one ``model.fit`` on random crops
of one side, the weights carried over. ``train.steps`` and ``train.max_minutes`` are split over
the stages by their ``fraction``; either bound may be ``None``. An epoch is
``train.steps_per_epoch`` steps and ends with a validation loss on held-out good images and a
checkpoint, from which a killed run resumes; a finished run bounded by time trains on when
resumed with a larger ``train.max_minutes`` (in the stage due at its clock). The run directory::

    model.keras        final model (float32, loads in safe mode)
    config.json        the effective Config
    history.json       one row per epoch: stage, step, loss, val_loss, elapsed seconds
    calibration.json   thresholds from the held-out good images (see ssad.detection)
    logs/              TensorBoard: a folder of loss scalars per stage, images/ samples
    checkpoints/       last.npz: weights, optimizer state and progress, for resuming
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ssad.batchnorm import recalibrate_batch_norm
from ssad.callbacks import (
    Checkpoint,
    LearningRate,
    RepairProbe,
    RunState,
    StageLimit,
    StagePlan,
    StageProgbar,
    Summaries,
    SyncStatistics,
    Validation,
    load_checkpoint,
    read_state,
    run_clock,
    save_checkpoint,
)
from ssad.config import Config
from ssad.data import train_dataset, validation_dataset
from ssad.data.geometry import describe
from ssad.data.pipeline import centre_crops
from ssad.data.readers import load_working_images, training_image_paths
from ssad.detection import calibrate_on_good, save_calibration, save_heldout
from ssad.errors import ConfigError, DataError, RunDirError
from ssad.files import atomic_path, atomic_write_text
from ssad.images import read_image
from ssad.losses import objective_for
from ssad.model import build_autoencoder, init_output_bias
from ssad.precision import POLICIES, resolve_precision
from ssad.progress import fit_verbose

_RESUME_MAY_CHANGE = {"max_minutes", "strategy"}  # train.* keys a resumed run may change


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` did; ``summary()`` is the text the CLI prints."""

    run_dir: Path
    model: keras.Model
    config: Config
    steps: int
    epochs: int
    seconds: float
    loss: float | None
    val_loss: float | None
    resumed_from_epoch: int | None  # epochs already done when this session started
    calibration: dict
    repair: dict  # the repair probe's last ratios per defect kind

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
        lines += [
            f"thresholds: pixel {num(c['pixel_threshold'])}, image {num(c['image_threshold'])} "
            f"({c['method']}, {c['n_images']} held-out images, "
            f"normalisation {c.get('normalize')})",
        ]
        for name in ("model.keras", "config.json", "history.json", "calibration.json"):
            lines.append(f"  {self.run_dir / name}")
        lines.append(f"  TensorBoard: tensorboard --logdir {self.run_dir / 'logs'}")
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
    ``resume``: continue from ``run_dir/checkpoints`` when a killed run left one (otherwise
    start over); a finished run goes on only when ``train.max_minutes`` grew.
    ``deterministic``: enable TensorFlow op determinism, so the same ``train.seed`` gives
    identical weights. ``callbacks`` run after ssad's own in every stage.
    Raises ``SsadError`` on bad data or config, a finished run in ``run_dir`` (unless its
    budget grew), or a NaN loss.
    """
    plans = plan_stages(config)  # a bad budget fails before anything starts
    # the strategy first: a multi-worker one must configure TensorFlow before any device query
    strategy = _make_strategy(config.train.strategy)
    precision, why = resolve_precision(config.train.mixed_precision)
    cfg = replace(config, train=replace(config.train, mixed_precision=precision))
    if verbose and why != "as configured":
        print(f"mixed precision: {precision} ({why})", flush=True)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    chief = _is_chief(strategy)
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "last.npz"
    _refuse_finished_run(run_dir, cfg, resume)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)  # an unusable --out fails before reading

    images, geometry, paths, _ = load_working_images(
        training_image_paths(data), cfg.data, cfg.data.on_bad_image
    )
    cfg = replace(cfg, data=geometry)  # data.resize and data.scale resolved
    if verbose:
        print(f"working geometry: {describe(geometry)}", flush=True)
    plans = _fit_crops(plans, min(min(x.shape[:2]) for x in images))
    _prepare_run_dir(run_dir, cfg, resume, chief)

    keras.utils.set_random_seed(cfg.train.seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    kept, heldout = _validation_order(len(images), cfg.data.validation_fraction, cfg.train.seed)
    train_images, val_images = _take(images, kept), _take(images, heldout)
    loss = objective_for(cfg.train.objective, cfg.train.lam, cfg.train.norm)

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[cfg.train.mixed_precision])
    try:
        with strategy.scope():
            model = build_autoencoder(cfg.model)
            init_output_bias(model, _mean_colour(train_images))
            if multiworker:
                model = _MultiWorkerModel(model.inputs, model.outputs, name=model.name)
            model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate), loss=loss)
            model.optimizer.build(model.trainable_variables)
        if multiworker:
            # Keras 3 fails to pre-build a model of several workers (keras-team/keras#20585):
            # forget the strategy captured at creation; fit runs in the strategy's scope.
            model._distribute_strategy = None
        state = RunState()
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path, model)
        if state.done:  # a finished run given a longer budget: on in the stage due by now
            due = [p.index for p in plans if p.deadline_s > state.elapsed_s]
            state.done, state.stage, state.stage_steps = False, due[0], 0
        resumed_from = state.epoch if state.step else None
        clock = run_clock(state.elapsed_s)
        if verbose and resumed_from is not None:
            print(f"resuming {run_dir} after epoch {state.epoch} (step {state.step})", flush=True)
        session = _Session(
            cfg, model, strategy, chief, run_dir, state, clock, train_images, val_images, loss,
            callbacks, verbose,
        )  # fmt: skip
        for plan in plans:
            if plan.index < state.stage:
                continue
            _fit_stage(session, plan)
            state.stage, state.stage_steps = plan.index + 1, 0
            save_checkpoint(ckpt_path, model, state, chief)
        state.elapsed_s = clock()
    except KeyboardInterrupt:
        if verbose:
            print(
                f"\ninterrupted; the last checkpoint (epoch {state.epoch}) is in {ckpt_path}: "
                "run the same command again to resume",
                flush=True,
            )
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    final = build_autoencoder(cfg.model)  # float32, outside the strategy
    final.set_weights(model.get_weights())
    recalibrate_batch_norm(final, train_images, seed=cfg.train.seed)  # whole images
    # thresholds from the held-out files as a user's images arrive: at their own size
    heldout_paths = [paths[i] for i in heldout]
    calibration, statistics = calibrate_on_good(final, [read_image(p) for p in heldout_paths], cfg)
    if chief:
        with atomic_path(run_dir / "model.keras") as tmp:
            final.save(tmp)
        atomic_write_text(run_dir / "history.json", json.dumps(state.history, indent=1) + "\n")
        save_heldout(run_dir, heldout_paths)
        save_calibration(run_dir, calibration, statistics)
        state.done = True
        save_checkpoint(ckpt_path, model, state, chief)
    last = state.history[-1] if state.history else {}
    return RunResult(
        run_dir=run_dir,
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
    )


@dataclass
class _Session:
    """What the stages of one :func:`train` call share."""

    cfg: Config
    model: keras.Model
    strategy: tf.distribute.Strategy
    chief: bool
    run_dir: Path
    state: RunState
    clock: Callable[[], float]
    train_images: np.ndarray
    val_images: np.ndarray
    loss: keras.losses.Loss
    callbacks: Sequence[keras.callbacks.Callback]
    verbose: int


def _fit_stage(session: _Session, plan: StagePlan) -> None:
    """One stage: ``model.fit`` on ``plan.crop`` crops until its step or time budget."""
    cfg, state, strategy, run_dir = session.cfg, session.state, session.strategy, session.run_dir
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
    ckpt_path = run_dir / "checkpoints" / "last.npz"
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    limit = StageLimit(
        state, plan, session.clock, ckpt_path, _any_worker(strategy) if multiworker else None
    )
    probe = RepairProbe(centre_crops(session.val_images[:10], plan.crop), seed=cfg.train.seed)
    cbs = [LearningRate(state, cfg.train, session.clock), limit, Validation(val, session.loss)]
    cbs.append(probe)
    if cfg.train.patience:
        cbs.append(
            keras.callbacks.EarlyStopping(patience=cfg.train.patience, restore_best_weights=True)
        )
    if multiworker:
        cbs.append(SyncStatistics(strategy))
    cbs.append(Checkpoint(ckpt_path, state, plan, session.clock, session.chief))
    if session.chief:
        log_dir = run_dir / "logs" / f"stage{plan.index + 1}_{plan.crop}px"
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


class _MultiWorkerModel(keras.Model):
    """The autoencoder with step logs of shape ``[1]``: Keras 3's ``fit`` averages the logs
    of several workers along an axis that scalars lack (keras-team/keras#20585)."""

    def train_step(self, data):
        return {k: keras.ops.reshape(v, (1,)) for k, v in super().train_step(data).items()}


def _make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if "TF_CONFIG" not in os.environ:
        raise ConfigError(
            "--strategy multiworker needs the TF_CONFIG environment variable on every worker "
            "(see README, Training on several machines)"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The one worker that writes the run directory (all do under a local strategy)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _any_worker(strategy: tf.distribute.Strategy):
    """``any_worker(flag)``: True when ``flag`` is True on any worker (a collective call)."""

    @tf.function
    def count(flag):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: flag), axis=None)

    return lambda flag: bool(count(tf.constant(1.0 if flag else 0.0)) > 0)


def _refuse_finished_run(run_dir: Path, cfg: Config, resume: bool) -> None:
    """Raise ``RunDirError`` when ``run_dir`` holds a finished run that ``cfg`` does not
    give a longer time budget."""
    ckpt_path = run_dir / "checkpoints" / "last.npz"
    if resume and ckpt_path.exists():
        state = read_state(ckpt_path)
        t = cfg.train
        longer = t.steps is None and t.max_minutes is not None
        if state.done and not (longer and 60.0 * t.max_minutes > state.elapsed_s):
            raise RunDirError(
                f"{run_dir} holds a finished run ({state.elapsed_s / 60:.1f} min of training); "
                "give a larger --max-minutes (and no --steps) to train it longer, or choose "
                "another --out"
            )


def _prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, chief: bool) -> None:
    """Create ``run_dir`` and save the effective config; refuse to resume with another one."""
    config_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoints" / "last.npz"
    if resume and ckpt_path.exists() and config_path.exists():
        old = Config.load(config_path).to_dict()
        new = cfg.to_dict()
        for key in _RESUME_MAY_CHANGE:
            old["train"].pop(key), new["train"].pop(key)
        changed = [
            f"{section}.{k}" for section in new for k in new[section]
            if old[section].get(k) != new[section][k]
        ]  # fmt: skip
        if changed:
            raise RunDirError(
                f"{config_path}: the run there used other settings ({', '.join(changed)}); "
                "resume with the same options or choose another --out"
            )
    if not chief:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for sub in ("checkpoints", "logs"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    cfg.save(config_path)
