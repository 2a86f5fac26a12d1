"""Reliability: every bad input gets a clear one-line answer, outputs are never half-written,
faults lose nothing, and models load only in Keras safe mode.

Most cases run the commands in this process (``CliRunner``: same code path, exit status and
stderr, without a TensorFlow start-up per case); a few run the installed ``ssad`` script as a
subprocess, where the whole of stderr and the signals are real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from badinputs import BAD, JUNK, png, texture, write_corpus
from click.testing import CliRunner
from helpers import make_run_dir

from ssad.cli import main
from ssad.detection import Detector
from ssad.errors import BadImageError, RunDirError
from ssad.images import read_image

SSAD = str(Path(sys.executable).parent / "ssad")
VALID = ["gray.png", "one pixel.png", "palette.png", "photo.jpg", "rgba.png", "sixteen bit.png"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A usable run, one whose model.keras holds a Lambda layer, one from ssad 9."""
    root = tmp_path_factory.mktemp("runs")
    lam = make_run_dir(root / "lambda run")
    inputs = keras.Input((None, None, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 0.5)(inputs)).save(lam / "model.keras")
    future = make_run_dir(root / "future run")
    calibration = json.loads((future / "calibration.json").read_text())
    (future / "calibration.json").write_text(json.dumps(calibration | {"ssad_version": "9.0.0"}))
    return {"good": make_run_dir(root / "run"), "lambda": lam, "future": future}


@pytest.fixture
def a_file(tmp_path):
    """A regular file: an output folder inside it cannot be created."""
    path = tmp_path / "a file.txt"
    path.write_text("not a folder")
    return path


def ssad(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error(result, *names: str) -> str:
    """Exit status 1 and on stderr one ``error:`` line naming each of ``names`` (and at most
    ``warning:`` lines besides)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def bad_category(corpus, tmp_path, bad_name="truncated.png") -> Path:
    """The corpus' MVTec category with one bad image among the defect-free test images."""
    data = shutil.copytree(corpus["mvtec"], tmp_path / "catégorie avec défaut")
    shutil.copy(corpus["bad"] / bad_name, data / "test" / "good" / bad_name)
    return data


# -- predict ---------------------------------------------------------------------------------------


def test_predict_reads_odd_images_and_ignores_junk(corpus, runs, tmp_path):
    result = ssad("predict", runs["good"], corpus["odd"], "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [Path(r["path"]).name for r in rows] == VALID
    assert all(np.isfinite(r["score"]) and "error" not in r for r in rows)
    one_pixel = read_image(tmp_path / "out" / "one pixel_mask.png")
    assert one_pixel.shape == (1, 1, 3)
    assert not any(name in p.name for p in (tmp_path / "out").iterdir() for name in JUNK)


@pytest.mark.parametrize("name", sorted(BAD))
def test_predict_names_the_bad_file_and_its_problem(corpus, runs, tmp_path, name):
    result = ssad("predict", runs["good"], corpus["bad"] / name, "--out", tmp_path / "out")
    assert_one_error(result, corpus["bad"] / name, BAD[name])


def test_predict_skip_bad_lists_what_it_skipped(corpus, runs, tmp_path):
    out = tmp_path / "out"
    result = ssad("predict", runs["good"], corpus["odd"], corpus["bad"], "--out", out, "--skip-bad")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(BAD)
    for name, problem in BAD.items():
        assert any(str(corpus["bad"] / name) in s and problem in s for s in skipped), name
    rows = json.loads((out / "scores.json").read_text())
    assert {Path(r["path"]).name for r in rows} == set(VALID)  # the skipped ones are listed
    assert all(r["score"] is not None for r in rows)


def test_predict_folder_without_images(corpus, runs, tmp_path):
    result = ssad("predict", runs["good"], corpus["empty"], "--out", tmp_path / "out")
    assert "no image files" in assert_one_error(result, corpus["empty"])


def test_predict_output_folder_inside_a_file(corpus, runs, a_file):
    result = ssad("predict", runs["good"], corpus["odd"], "--out", a_file / "out")
    assert "Not a directory" in assert_one_error(result, a_file / "out")


def test_debug_shows_the_exception(corpus, runs, tmp_path):
    bad = corpus["bad"] / "empty.png"
    result = ssad("predict", runs["good"], bad, "--out", tmp_path / "out", "--debug")
    assert isinstance(result.exception, BadImageError)
    assert result.exception.path == str(bad)


def test_unexpected_exception_is_one_line_with_a_hint(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("something\nunforeseen")

    monkeypatch.setattr("ssad.prediction.predict_files", broken)
    result = ssad("predict", tmp_path, "x.png", "--out", tmp_path / "out")
    line = assert_one_error(result, "ValueError: something unforeseen")
    assert line.endswith("(rerun with --debug for the traceback)")
    result = ssad("predict", tmp_path, "x.png", "--out", tmp_path / "out", "--debug")
    assert isinstance(result.exception, ValueError)


# -- run directories: not one, from another version, unsafe model ---------------------------------


def _run_dir_commands(run, corpus, out):
    return {
        "predict": ["predict", run, corpus["odd"], "--out", out],
        "evaluate": ["evaluate", run, corpus["mvtec"], "--out", out],
        "export": ["export", run, out],
        "calibrate": ["calibrate", run, corpus["mvtec"]],
    }


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "calibrate"])
@pytest.mark.parametrize(
    "kind, problem",
    [
        ("not a run", "incomplete run directory, missing model.keras, config.json"),
        ("future", "made by ssad 9.0.0"),
        ("lambda", "Lambda"),
    ],
)
def test_run_dir_problems_are_one_line(corpus, runs, tmp_path, command, kind, problem):
    run = corpus["odd"] if kind == "not a run" else runs[kind]
    result = ssad(*_run_dir_commands(run, corpus, tmp_path / "out")[command])
    line = assert_one_error(result, run)
    assert problem in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detector_load_refuses_a_lambda_layer(runs):
    with pytest.raises(RunDirError, match="Lambda"):
        Detector.load(runs["lambda"])


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_with_a_wrong_size_mask_and_a_missing_mask(corpus, runs, tmp_path):
    result = ssad("evaluate", runs["good"], corpus["mvtec"], "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["n_defective"] == 2
    assert metrics["image_auroc"] is not None and metrics["skipped"] == []
    mask = corpus["mvtec"] / "ground_truth" / "scratch" / "000_mask.png"
    assert f"warning: {mask}: mask is 30x20, image is 48x48" in result.stderr
    unmasked = corpus["mvtec"] / "test" / "scratch" / "001.png"
    assert f"warning: {unmasked}: no mask" in result.stderr
    assert metrics["pixel_auroc"] is None


def test_evaluate_bad_image_and_skip_bad(corpus, runs, tmp_path):
    data = bad_category(corpus, tmp_path)
    bad = data / "test" / "good" / "truncated.png"
    result = ssad("evaluate", runs["good"], data, "--out", tmp_path / "report")
    assert "cannot decode" in assert_one_error(result, bad)
    result = ssad("evaluate", runs["good"], data, "--out", tmp_path / "report", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert f"skipped {bad}: cannot decode" in result.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert [s["path"] for s in metrics["skipped"]] == [str(bad)]
    assert metrics["n_images"] == 4


def test_evaluate_checks_the_output_folder_before_reading_images(corpus, runs, tmp_path, a_file):
    data = bad_category(corpus, tmp_path)  # reading it would fail on its bad image
    result = ssad("evaluate", runs["good"], data, "--out", a_file / "report")
    assert_one_error(result, a_file / "report")


# -- export, calibrate, distort, inspect, make-demo-data -------------------------------------------


def test_export_base_inside_a_file(runs, a_file):
    assert_one_error(ssad("export", runs["good"], a_file / "exports"), a_file / "exports")


def test_calibrate_bad_image_and_skip_bad(corpus, runs, tmp_path):
    run = shutil.copytree(runs["good"], tmp_path / "run")
    data = bad_category(corpus, tmp_path)
    bad = data / "test" / "good" / "truncated.png"
    args = ["calibrate", run, data, "--method", "good-quantile"]
    assert_one_error(ssad(*args), bad)
    result = ssad(*args, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert f"skipped {bad}" in result.stderr
    assert json.loads((run / "calibration.json").read_text())["n_images"] == 2

    (run / "calibration.json").unlink()  # F1 needs a pixel threshold it cannot choose here
    line = assert_one_error(ssad("calibrate", run, corpus["mvtec"]), corpus["mvtec"])
    assert "use --method good-quantile" in line


@pytest.mark.parametrize("command", ["distort", "inspect"])
def test_training_image_readers(corpus, tmp_path, command, a_file):
    out = {"distort": ["--out", tmp_path / "out"], "inspect": ["--out", tmp_path / "maps.png"]}
    preset = ["--preset", "tiny", "-n", "4"] if command == "distort" else ["--resolution", "32"]
    train_good = corpus["mvtec"] / "train" / "good"
    ok = ssad(command, corpus["mvtec"], *out[command], *preset)
    assert ok.exit_code == 0, ok.output
    assert ok.stderr == ""

    bad = shutil.copytree(corpus["odd"], tmp_path / "bad images")
    (bad / "empty.png").write_bytes(b"")
    assert "empty file" in assert_one_error(ssad(command, bad, *out[command]), bad / "empty.png")
    skipping = ssad(command, bad, *out[command], *preset, "--skip-bad")
    assert skipping.exit_code == 0, skipping.output
    assert f"{bad / 'empty.png'}: empty file" in skipping.stderr

    assert "no images" in assert_one_error(ssad(command, corpus["empty"], *out[command]))
    if command == "distort":
        result = ssad(command, train_good, "--out", a_file / "out", *preset)
        assert_one_error(result, a_file / "out")


def test_config_with_an_unknown_key(corpus, tmp_path):
    config = tmp_path / "my config.json"
    config.write_text(json.dumps({"train": {"stepz": 3}}))
    for command in (["train", corpus["mvtec"], "--out", tmp_path / "run"], ["info"]):
        line = assert_one_error(ssad(*command, "--config", config), config)
        assert "stepz" in line
    assert not (tmp_path / "run").exists()


def test_train_refuses_bad_inputs_before_training(corpus, tmp_path, a_file):
    data = bad_category(corpus, tmp_path)
    args = ["--preset", "tiny", "--steps", "2"]
    # images of several sizes keep their aspect at one scale: a 1x1 image is too small there
    tiny = data / "train" / "good" / "one pixel.png"
    line = assert_one_error(ssad("train", data, "--out", tmp_path / "run", *args), tiny)
    assert "too small: 1x1 pixels" in line
    tiny.unlink()
    bad = data / "train" / "good" / "truncated.png"
    shutil.copy(corpus["bad"] / "truncated.png", bad)
    assert_one_error(ssad("train", data, "--out", tmp_path / "run", *args), bad)
    assert_one_error(ssad("train", corpus["empty"], "--out", tmp_path / "run2", *args))
    result = ssad("train", data, "--out", a_file / "run", *args)
    assert_one_error(result, a_file / "run")


def test_demo_and_make_demo_data_into_a_file(a_file):
    for command in (["make-demo-data", a_file / "demo"], ["demo", "--out", a_file / "demo"]):
        line = assert_one_error(ssad(*command), a_file)
        assert "is a file, not a folder" in line or "Not a directory" in line


def test_demo_refuses_a_folder_that_is_not_demo_data(tmp_path):
    (tmp_path / "data_brick" / "train").mkdir(parents=True)
    assert "not demo data" in assert_one_error(ssad("demo", "--out", tmp_path), tmp_path)


# -- the real thing: subprocesses and signals -----------------------------------------------------


def _env():
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: ssad sets its own
    return env


def test_subprocess_error_is_exactly_one_line(corpus, runs, tmp_path):
    """Run from the corpus' parent, the error names the file exactly as given (relative)."""
    given = Path("défauts et rayures") / "bad"
    proc = subprocess.run(
        [SSAD, "predict", str(runs["good"]), str(given), "--out", str(tmp_path / "out")],
        cwd=corpus["base"].parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {given / 'empty.png'}: empty file (0 bytes)"], (
        proc.stderr
    )


def _wait_for(proc, predicate, timeout=180):
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _visible(folder: Path) -> dict[str, bytes]:
    """The files under ``folder`` by relative path, but for hidden ones (temporary names)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): p.read_bytes() for p in files if p.name[0] != "."}


def _building(out: Path) -> list[Path]:
    """The temporary folders in which a command builds ``out`` (``ssad.files.output_dir``)."""
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


def test_predict_killed_then_rerun_gives_the_same_results(runs, tmp_path):
    images = tmp_path / "many images"
    images.mkdir()
    for i in range(12):
        (images / f"{i:02d}.png").write_bytes(png(texture(40, i)))
    out = tmp_path / "out"
    args = ["predict", str(runs["good"]), str(images), "--batch-size", "1", "--out"]
    proc = subprocess.Popen([SSAD, *args, str(out)], env=_env(), stdout=subprocess.DEVNULL)
    _wait_for(proc, lambda: any(d.glob("*_overlay.png") for d in _building(out)))
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not out.exists()  # half a prediction is never where the results belong

    assert ssad(*args, out).exit_code == 0
    assert ssad(*args, tmp_path / "uninterrupted").exit_code == 0
    assert _visible(out) == _visible(tmp_path / "uninterrupted")
    assert len(_visible(out)) == 2 * 12 + 2  # overlays, masks, scores.csv and .json


def test_evaluate_killed_then_rerun_gives_the_same_results(corpus, runs, tmp_path):
    report = tmp_path / "report"
    args = ["evaluate", str(runs["good"]), str(corpus["mvtec"]), "--out"]
    proc = subprocess.Popen([SSAD, *args, str(report)], env=_env(), stdout=subprocess.DEVNULL)
    _wait_for(proc, lambda: any((d / "metrics.json").exists() for d in _building(report)))
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not report.exists()  # metrics without their report never appear at --out

    assert ssad(*args, report).exit_code == 0
    assert ssad(*args, report).exit_code == 0  # an earlier report is replaced
    assert ssad(*args, tmp_path / "uninterrupted").exit_code == 0

    def results(folder):
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.pop("seconds")
        return metrics, (folder / "scores.csv").read_text(), sorted(_visible(folder))

    assert results(report) == results(tmp_path / "uninterrupted")


def test_a_full_disk_leaves_no_report_and_names_the_output(corpus, runs, tmp_path, monkeypatch):
    import errno

    def full(out, *args):
        (out / "index.html").write_text("<html>")  # some files made it, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "roc_image.png"))

    monkeypatch.setattr("ssad.evaluation.write_report", full)
    report = tmp_path / "report"
    result = ssad("evaluate", runs["good"], corpus["mvtec"], "--out", report)
    assert assert_one_error(result) == f"error: {report}: No space left on device"
    assert not report.exists() and _building(report) == []  # nothing that looks like success
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("a user's file")
    result = ssad("evaluate", runs["good"], corpus["mvtec"], "--out", other)
    assert "holds other files" in assert_one_error(result, other)
    assert (other / "notes.txt").read_text() == "a user's file"


ONE_STAGE = {  # the tiny model at 32 px in one stage: the fewest traced graphs
    "model": {"width": 0.125, "sdc_blocks": 2},
    "data": {"resolution": 32},
    "train": {"steps_per_epoch": 2, "stages": [{"crop": 32, "batch_size": 2, "fraction": 1}]},
}


def test_ctrl_c_during_train_stops_cleanly_and_resumes(corpus, tmp_path):
    """Training on the odd images with a bad one skipped; Ctrl-C after the first checkpoint."""
    data = bad_category(corpus, tmp_path)
    shutil.copy(corpus["bad"] / "empty.png", data / "train" / "good" / "empty.png")
    run, config = tmp_path / "run", tmp_path / "one stage.json"
    config.write_text(json.dumps(ONE_STAGE))
    args = ["train", str(data), "--out", str(run), "--config", str(config), "--skip-bad"]
    proc = subprocess.Popen(
        [SSAD, *args, "--max-minutes", "10"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a test run started in the background (nohup ... &) hands its
        # children an ignored SIGINT, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for(proc, lambda: (run / "checkpoints" / "last.npz").exists())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "interrupted", stderr
    assert "run the same command again to resume" in stdout
    assert "Traceback" not in stderr
    assert not (run / "model.keras").exists()

    resumed = ssad(*args, "--max-minutes", "0.001")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed after epoch" in resumed.stdout
    empty = data / "train" / "good" / "empty.png"
    assert f"skipped {empty}: empty file" in resumed.stderr  # listed when the command ends
    detector = Detector.load(run)
    assert detector.score(np.zeros((1, 32, 32, 3), np.float32)).shape == (1,)
