"""Training: the run directory, resume after SIGKILL, bf16, NaN handling, determinism and the
``ssad train`` options. Tiny models on a few 32-64 px generated images, a few steps each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter

from ssad.callbacks import LearningRate, schedule_factor
from ssad.checkpoint import RunState, read_state
from ssad.cli import main
from ssad.config import Config
from ssad.data.readers import load_images, training_image_paths
from ssad.errors import ConfigError, DataError, RunDirError, SsadError
from ssad.images import write_png
from ssad.precision import resolve_precision
from ssad.training import plan_stages, split_validation, train, training_config


def make_images(folder: Path, n: int = 6, size: int = 64) -> Path:
    """``n`` smoothed-noise textures as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        x = gaussian_filter(rng.random((size, size, 3)), (2, 2, 0))
        write_png(folder / f"good_{i}.png", (x - x.min()) / (x.max() - x.min()))
    return folder


def small_config(steps: int = 4, **overrides) -> Config:
    """Tiny model with one narrow SDC block, 32 px, one stage of batch 2, an epoch every 2
    steps (a small graph: tracing the train step dominates these tests' time)."""
    return Config.preset("tiny").override(
        {
            "model.sdc_blocks": 1,
            "model.dilation_rates": [1, 2],
            "data.resolution": 32,
            "distortion.kind": "zeros",
            "train.steps": steps,
            "train.steps_per_epoch": 2,
            "train.stages": [{"crop": 32, "batch_size": 2, "fraction": 1.0}],
            **overrides,
        }
    )


def run_python(code: str, *args, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def checkpoint_state(run_dir: Path) -> RunState:
    return read_state(run_dir / "checkpoints" / "last.npz")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("good") / "images")


def test_cli_tiny_run_writes_every_run_dir_file(images, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", str(images), "--out", str(run), "--preset", "tiny", "--steps", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "trained 4 steps" in result.output and str(run / "model.keras") in result.output
    for name in ("model.keras", "config.json", "history.json", "calibration.json"):
        assert (run / name).is_file(), name
    for name in ("statistics.npz", "heldout.json"):
        assert (run / name).is_file(), name
    expected = training_config(Config.preset("tiny"), steps=4)
    precision = resolve_precision("auto")[0]  # the saved config holds what auto chose
    assert precision in result.output
    # ... the lambda of objective 1 and the working geometry auto chose (images of one size
    # are squared)
    assert expected.train.lam is None
    expected = expected.override(
        {"train.mixed_precision": precision, "train.lam": 0.9, "data.resize": "square"}
    )
    assert Config.load(run / "config.json") == expected
    assert "working geometry: square: every image resized to 64x64" in result.output
    heldout = json.loads((run / "heldout.json").read_text())["paths"]
    assert len(heldout) == 1 and Path(heldout[0]).parent == images  # 0.2 of 6 images
    history = json.loads((run / "history.json").read_text())
    # tiny: 2 stages of 2 steps, one epoch each
    assert [(h["stage"], h["crop"], h["step"]) for h in history] == [(1, 32, 2), (2, 64, 4)]
    # the repair probe: one held-out image, so one kind of synthetic defect, each epoch
    repair = [{k: v for k, v in h.items() if k.startswith("repair_")} for h in history]
    assert all(len(r) == 1 and 0 <= next(iter(r.values())) < 10 for r in repair)
    assert "repair probe" in result.output
    assert "\x1b[" not in result.output and "\r" not in result.output  # a readable log
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in history)
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["method"] == "good-quantile" and calibration["n_images"] == 1
    assert calibration["normalize"] == "structure"  # the default scoring
    assert np.isfinite(calibration["pixel_threshold"]) and np.isfinite(
        calibration["image_threshold"]
    )
    events = sorted((run / "logs").rglob("events.out.tfevents.*"))
    assert [p.parent.name for p in events] == ["stage1_32px", "stage2_64px"]
    tags = {
        v.tag for e in tf.compat.v1.train.summary_iterator(str(events[1])) for v in e.summary.value
    }
    repair = {t for t in tags if t.startswith("repair_")}
    assert len(repair) == 1  # the repair probe's scalar
    assert tags - repair == {"loss", "val_loss", "distorted_input", "original", "reconstruction"}
    model = keras.models.load_model(run / "model.keras", safe_mode=True, compile=False)
    assert model.output.dtype == "float32" and model.count_params() > 0
    assert checkpoint_state(run).done and checkpoint_state(run).step == 4
    # the same command again refuses to train over a finished run
    again = CliRunner().invoke(
        main, ["train", str(images), "--out", str(run), "--preset", "tiny", "--steps", "4"]
    )
    assert again.exit_code == 1 and "finished run" in again.output


def test_saved_model_has_exact_batch_norm_statistics(images, tmp_path):
    cfg = small_config(steps=2)
    train(cfg, images, tmp_path / "run", verbose=0)
    loaded, _ = load_images(training_image_paths(images), 32, "error")
    train_images, _ = split_validation(loaded, cfg.data.validation_fraction, cfg.train.seed)
    x = train_images.astype("float32") / 255.0  # 5 images: every recalibration batch holds all
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    conv = keras.Model(model.input, model.get_layer("enc1_conv1").output)(x).numpy()
    bn = model.get_layer("enc1_conv1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv.var(axis=(0, 1, 2)), rtol=1e-4)


_KILLED_RUN = """
import os, signal, sys
import keras, ssad
from ssad.training import train

class KillAtStep3(keras.callbacks.Callback):
    seen = 0
    def on_train_batch_end(self, batch, logs=None):
        KillAtStep3.seen += 1
        if KillAtStep3.seen == 3:  # mid-epoch 2, after the checkpoint of epoch 1
            os.kill(os.getpid(), signal.SIGKILL)

train(ssad.Config.load(sys.argv[1]), sys.argv[2], sys.argv[3], callbacks=[KillAtStep3()],
      verbose=0)
"""


def test_resume_after_sigkill(images, tmp_path):
    cfg = small_config(steps=6, **{"train.schedule": "cosine"})
    cfg.save(tmp_path / "cfg.json")
    run = tmp_path / "run"
    killed = run_python(_KILLED_RUN, tmp_path / "cfg.json", images, run)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / "model.keras").exists()
    state = checkpoint_state(run)
    assert (state.epoch, state.step, state.done) == (1, 2, False)

    result = train(cfg, images, run, verbose=0)
    assert result.resumed_from_epoch == 1
    assert (result.steps, result.epochs) == (6, 3)
    history = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4, 6]
    assert checkpoint_state(run).done
    # the learning-rate schedule went on from the restored step: the k-th step of 6 ran at
    # progress (k - 1) / 6, in the killed session and in the resumed one alike
    t = cfg.train
    want = [t.learning_rate * schedule_factor((k - 1) / 6, "cosine", t.warmup) for k in (2, 4, 6)]
    np.testing.assert_allclose([h["learning_rate"] for h in history], want, rtol=1e-2)


def test_finished_run_trains_longer_with_a_larger_budget(images, tmp_path):
    # two stages by time; the extension goes on in the stage due at the run's clock
    cfg = training_config(small_config(), max_minutes=0.05).override(
        {"train.stages": [{"crop": 16, "batch_size": 2, "fraction": 0.5},
                          {"crop": 32, "batch_size": 2, "fraction": 0.5}]}
    )  # fmt: skip
    run = tmp_path / "run"
    first = train(cfg, images, run, verbose=0)
    with pytest.raises(RunDirError, match="larger --max-minutes"):
        train(cfg, images, run, verbose=0)  # the same budget: nothing to do
    budget = (first.seconds + 4.0) / 60  # tracing makes the first run overshoot its 3 s
    longer = train(training_config(cfg, max_minutes=budget), images, run, verbose=0)
    assert longer.resumed_from_epoch == first.epochs and longer.steps > first.steps
    assert longer.seconds >= first.seconds + 4.0
    history = json.loads((run / "history.json").read_text())
    steps = [h["step"] for h in history]
    assert steps == sorted(steps) and steps[-1] == longer.steps
    # the first stage's new deadline (half the budget) has passed: all of it in stage 2
    assert first.seconds > 30 * budget
    assert {h["stage"] for h in history[first.epochs :]} == {2}
    assert checkpoint_state(run).done
    assert Config.load(run / "config.json").train.max_minutes == budget


def test_schedule_warms_up_then_decays_to_zero():
    values = [schedule_factor(p, "cosine", 0.1) for p in (0.0, 0.05, 0.1, 0.55, 1.0, 2.0)]
    assert values[0] < 0.02 and values[1] == pytest.approx(0.5, abs=0.01)
    assert values[2] == pytest.approx(1.0) and values[3] == pytest.approx(0.5)
    assert values[4] == pytest.approx(0.0, abs=1e-12) and values[5] == values[4]
    assert schedule_factor(0.7, "constant", 0.1) == 1.0


def test_time_bounded_progress_follows_the_run_clock():
    cfg = training_config(Config.preset("tiny"), max_minutes=2.0)  # no step bound
    assert cfg.train.steps is None
    schedule = LearningRate(RunState(step=10), cfg.train, clock=lambda: 30.0)
    assert schedule.progress() == 0.25  # 30 s of 120
    both = cfg.override({"train.steps": 20})
    assert LearningRate(RunState(step=10), both.train, clock=lambda: 30.0).progress() == 0.5


def test_resume_refuses_other_settings(images, tmp_path):
    cfg = small_config(steps=2)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg.override({"train.lam": 0.5}).save(run / "config.json")  # geometry unresolved
    state = np.array(json.dumps(asdict(RunState(epoch=1, step=2))))
    np.savez(run / "checkpoints" / "last.npz", state=state)
    with pytest.raises(RunDirError, match="train.lam"):
        train(cfg.override({"train.lam": 0.3}), images, run, verbose=0)
    # an unset lambda resumes with the run's own (0.5: a run of an ssad of that default)
    assert cfg.train.lam is None
    with pytest.raises(RunDirError, match="data.resize") as refused:
        train(cfg, images, run, verbose=0)
    assert "train.lam" not in str(refused.value)


def test_bf16_one_step_has_finite_loss(images, tmp_path):
    cfg = small_config(steps=1, **{"train.mixed_precision": "bf16"})
    result = train(cfg, images, tmp_path / "run", verbose=0)
    assert result.steps == 1 and np.isfinite(result.loss) and np.isfinite(result.val_loss)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    saved = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert saved.layers[1].dtype_policy.name == "float32"  # portable final model


class _PoisonAtStep3(keras.callbacks.Callback):
    """Sets the output layer's kernel to NaN after the third step of the session."""

    seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == 3:
            kernel = self.model.get_layer("reconstruction").kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(images, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SsadError, match=r"diverged: loss is nan at step 4.*epoch 1"):
        train(small_config(steps=6), images, run, callbacks=[_PoisonAtStep3()], verbose=0)
    state = checkpoint_state(run)
    assert (state.epoch, state.step) == (1, 2)
    with np.load(run / "checkpoints" / "last.npz") as f:
        assert all(np.isfinite(f[k]).all() for k in f.files if k != "state")
    assert not (run / "model.keras").exists()


_TWO_SEEDED_RUNS = """
import sys
import numpy as np, ssad
from ssad.detection import Detector
from ssad.training import train
cfg = ssad.Config.load(sys.argv[1])
score = {"score.normalize": "global", "score.image_normalize": "pixel", "score.image": "max",
         "score.map": "squared+msgms"}
# the second run scores differently; scoring does not change training
a, b = (train(c, sys.argv[2], f"{sys.argv[3]}/{i}", deterministic=True, verbose=0).model
        for i, c in enumerate([cfg, cfg.override(score)]))
same = all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
print("RESULT", len(a.get_weights()), same)
rescored = Detector.load(f"{sys.argv[3]}/0", score_overrides=score)
trained = Detector.load(f"{sys.argv[3]}/1")
images = np.random.default_rng(0).random((3, 32, 32, 3)).astype("float32")
(h0, s0), (h1, s1) = rescored.maps(images), trained.maps(images)
print("RESCORED", rescored.calibration == trained.calibration,
      trained.calibration.image_normalize == "pixel",
      np.abs(h0 - h1).max() < 1e-6 and np.abs(s0 - s1).max() < 1e-6)
"""


def test_same_seed_gives_identical_weights_and_rescoring_equals_training(images, tmp_path):
    # a subprocess: op determinism is process-wide and must not leak into other tests
    small_config(steps=2, **{"distortion.kind": "elastic"}).save(tmp_path / "cfg.json")
    out = run_python(_TWO_SEEDED_RUNS, tmp_path / "cfg.json", images, tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RESULT 92 True" in out.stdout
    # `ssad evaluate RUN --set score...` rescoring gives the run trained with those settings
    assert "RESCORED True True True" in out.stdout


def test_training_config_applies_the_cli_options():
    base = Config.preset("tiny")  # resolution 64, crops 32 and 64
    cfg = training_config(base, image_size=128, batch_size=3, objective=2, lam=0.25, seed=5)
    assert cfg.data.resolution == 128
    assert [(s.crop, s.batch_size) for s in cfg.train.stages] == [(64, 3), (128, 3)]
    assert (cfg.train.objective, cfg.train.lam, cfg.train.seed) == (2, 0.25, 5)
    assert cfg.data.resize == "auto" and training_config(base, resize="native").data.resize == (
        "native"
    )
    small = training_config(base, image_size=16)
    assert [s.crop for s in small.train.stages] == [8, 16]
    timed = training_config(base, max_minutes=2.5)
    assert timed.train.steps is None and timed.train.max_minutes == 2.5
    both = training_config(base, max_minutes=2.5, steps=7)
    assert both.train.steps == 7
    with pytest.raises(ConfigError, match="multiple of 8"):
        training_config(base, image_size=100)


def test_plan_stages_splits_steps_exactly_and_time_cumulatively():
    cfg = Config.preset("paper").override({"train.steps": 101, "train.max_minutes": 10})
    plans = plan_stages(cfg)  # fractions 0.2, 0.4, 0.4
    assert [p.steps for p in plans] == [20, 41, 40]
    assert sum(p.steps for p in plans) == 101
    assert [p.deadline_s for p in plans] == pytest.approx([120, 360, 600])
    assert [p.steps for p in plan_stages(small_config(steps=1))] == [1]


def test_split_validation_holds_out_at_least_one_image():
    images = np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 3), np.uint8)
    train_part, val = split_validation(images, 0.0, seed=0)
    assert (len(train_part), len(val)) == (4, 1)
    assert sorted(np.concatenate([train_part, val])[:, 0, 0, 0]) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="at least 2"):
        split_validation(images[:1], 0.1, seed=0)
