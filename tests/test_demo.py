import json
import re

import pytest
from click.testing import CliRunner

from ssad.cli import main
from ssad.demo import run_demo
from ssad.demo_data import make_demo_data
from ssad.errors import ConfigError, DataError


def test_demo_command_reuses_data_trains_evaluates_and_reports(tmp_path):
    out = tmp_path / "demo"
    data = make_demo_data(out / "data_brick", n_train=8, n_good=3, n_defect=2, size=64)
    args = ["demo", "--out", str(out), "--minutes", "0.2", "--preset", "tiny"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    headline = re.search(r"^image AUROC (\S+)\s+pixel AUROC (\S+)", result.output, re.M)
    assert headline, result.output
    metrics = json.loads((out / "report_brick" / "metrics.json").read_text())
    assert headline.groups() == (f"{metrics['image_auroc']:.3f}", f"{metrics['pixel_auroc']:.3f}")
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert metrics["n_images"] == 3 + 2 * 4 and metrics["n_defective"] == 8
    assert f"report: {out / 'report_brick' / 'index.html'}" in result.output
    assert (out / "report_brick" / "index.html").is_file()
    assert (out / "run_brick" / "model.keras").is_file()
    # the small data set made above was reused, not replaced by a full one
    assert len(list((data / "train" / "good").iterdir())) == 8
    config = json.loads((out / "run_brick" / "config.json").read_text())
    assert config["data"]["resolution"] == 64 and config["train"]["max_minutes"] < 0.2


def test_demo_refuses_a_bad_budget_and_a_foreign_data_folder(tmp_path):
    with pytest.raises(ConfigError, match="> 0 minutes"):
        run_demo(tmp_path, minutes=0)
    (tmp_path / "data_grass").mkdir()
    with pytest.raises(DataError, match="not demo data"):
        run_demo(tmp_path, texture="grass", minutes=1)
