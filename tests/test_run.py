"""RunDir and Calibration: the run directory's layout, its checks and JSON round trips; the
command line answering --help without TensorFlow."""

import json
import subprocess
import sys

import pytest

from ssad.config import Config
from ssad.errors import RunDirError
from ssad.run import Calibration, RunDir, untrained_run


def test_prepare_saves_the_config_and_refuses_another_on_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = Config.preset("tiny")
    run.prepare(cfg, resume=True)
    assert run.read_config() == cfg and run.logs_path.is_dir()
    run.checkpoint_path.write_bytes(b"a checkpoint")  # a run to resume
    longer = cfg.override({"train.max_minutes": 9.0})
    run.prepare(longer, resume=True, may_change=["train.max_minutes"])  # allowed
    other = cfg.override({"train.seed": 7})
    with pytest.raises(RunDirError, match=r"other settings \(train.seed\)"):
        run.prepare(other, resume=True, may_change=["train.max_minutes"])
    run.prepare(
        other, resume=True, may_change=["train.seed", "train.max_minutes"], write=False
    )  # a worker: no write
    assert run.read_config() == longer
    run.prepare(other, resume=False)  # starting over removes the checkpoint
    assert not run.checkpoint_path.exists() and run.read_config() == other


def test_untrained_run_is_complete_and_its_calibration_round_trips(tmp_path):
    run = untrained_run(tmp_path / "run", Config.preset("tiny"), 0.1, 0.2, heldout=[])
    run.check()
    assert run.is_finished() and run.read_history() == [] and run.read_heldout() == []
    assert [p.name for p in run.provenance()] == ["config.json", "calibration.json"]
    calibration = run.read_calibration()
    assert (calibration.pixel_threshold, calibration.image_threshold) == (0.1, 0.2)
    on_disk = json.loads(run.calibration_path.read_text())
    assert on_disk == calibration.to_dict() and on_disk["score"]["normalize"] == "structure"
    assert run.read_statistics() is None and run.read_state() is None


def test_calibration_keeps_what_its_method_adds_and_reads_old_files():
    old = {"pixel_threshold": 1, "image_threshold": 2.5, "method": "f1", "f1_image": 0.9}
    calibration = Calibration.from_dict(old)  # no score: made before the scoring options
    assert calibration.score is None and calibration.details == {"f1_image": 0.9}
    assert {k: v for k, v in calibration.to_dict().items() if k in old} == old
    with pytest.raises(RunDirError, match="must be a finite number"):
        Calibration(True, 1.0, "manual")


def test_help_answers_without_importing_tensorflow():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ssad.cli import main\n"
        "for args in (['--help'], ['train', '--help'], ['train']):\n"
        "    result = CliRunner().invoke(main, args)\n"
        "    print(result.exit_code)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0", "2", "False"], out.stderr
