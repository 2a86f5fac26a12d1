"""The quality benchmark's table, results file and argument checks (no training here)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from bench import corruption_area, quality, quality_table  # noqa: E402

from ssad.errors import DataError  # noqa: E402

ROWS = [
    {"dataset": "mvtec3d_tire", "variant": "objective1", "minutes": 20.0, "preset": "object",
     "resolution": 256, "mixed_precision": "bf16", "overrides": {"train.learning_rate": 0.001},
     "image_auroc": 0.81234, "pixel_auroc": 0.9,
     "aupro": 0.61, "seconds_per_image": 0.0523, "steps": 412, "commit": "abc1234",
     "date": "2026-11-28 16:30"},
    {"dataset": "mvtec_bottle", "variant": "plain-ae", "minutes": 0.5, "preset": "object",
     "resolution": 256, "mixed_precision": "none", "image_auroc": 0.7, "pixel_auroc": None,
     "aupro": None, "seconds_per_image": 0.1, "steps": 7, "commit": "abc1234-dirty",
     "date": "2026-11-28 15:30"},
]  # fmt: skip


def test_table_renders_rows_in_file_order(tmp_path):
    results = tmp_path / "quality.jsonl"
    for row in ROWS:
        quality.append_row(results, row)
    assert len(results.read_text().splitlines()) == 2
    lines = quality_table.main(["--results", str(results)]).splitlines()
    assert lines[0].startswith(
        "| data set | variant | preset | size (px) | precision | overrides | minutes |"
    )
    assert (
        lines[1]
        == "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    assert lines[2] == (
        "| mvtec3d_tire | objective1 | object | 256 | bf16 | train.learning_rate=0.001 | 20 | 412 "
        "| 0.812 | 0.900 | 0.610 | 0.052 | abc1234 |"
    )
    assert lines[3] == (
        "| mvtec_bottle | plain-ae | object | 256 | none | – | 0.5 | 7 | 0.700 | – | – | 0.100 "
        "| abc1234-dirty |"
    )
    assert len(lines) == 4


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "results file not found"),
        ("\n", "no result rows"),
        ('{"dataset": "x"}\nnot json\n', ":1: a result row lacks variant"),
        (json.dumps(ROWS[0]) + "\nnot json\n", ":2: not JSON"),
    ],
)
def test_table_names_file_and_line_of_bad_results(tmp_path, content, problem):
    results = tmp_path / "r.jsonl"
    if content is not None:
        results.write_text(content)
    with pytest.raises(DataError, match=problem) as caught:
        quality_table.main(["--results", str(results)])
    assert str(results) in str(caught.value)


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--variant", "objective1", "--minutes", "1"], "required: --data"),
        (["--data", "{data}", "--variant", "objective3", "--minutes", "1"], "invalid choice"),
        (["--data", "{data}", "--variant", "plain-ae", "--minutes", "0"], "must be > 0"),
        (["--data", "{data}/train", "--variant", "ensemble", "--minutes", "1"], "train/ and test/"),
        (
            ["--data", "{data}", "--variant", "plain-ae", "--minutes", "1", "--set", "x"],
            "KEY=VALUE",
        ),
        (
            ["--data", "{data}", "--variant", "plain-ae", "--minutes", "10", "--extend-from", "10"],
            "--extend-from must be between 0 and --minutes",
        ),
    ],
)
def test_quality_rejects_bad_arguments(tmp_path, capsys, args, problem):
    for sub in ("train/good", "test/good"):
        (tmp_path / sub).mkdir(parents=True)
    with pytest.raises(SystemExit) as caught:
        quality.main([a.format(data=tmp_path) for a in args])
    assert caught.value.code == 2
    assert problem in capsys.readouterr().err


def test_variants_are_config_overrides_of_the_preset():
    from ssad.config import Config

    base = Config.preset("object")
    plain = base.override(quality.VARIANTS["plain-ae"])
    assert (plain.train.objective, plain.distortion.kind) == (0, "none")
    swap = base.override(quality.VARIANTS["objective1-swap"])
    assert (swap.train.objective, swap.distortion.kind) == (1, "swap")
    assert base.override(quality.VARIANTS["objective2"]).train.patience == 3
    assert set(quality.ENSEMBLE) < set(quality.VARIANTS)


def test_set_reads_values_as_json_else_text(tmp_path):
    for sub in ("train/good", "test/good"):
        (tmp_path / sub).mkdir(parents=True)
    args = quality.parse_args(
        ["--data", str(tmp_path), "--variant", "objective1", "--minutes", "1",
         "--set", "train.learning_rate=1e-3", "--set", "distortion.kind=zeros"]
    )  # fmt: skip
    assert args.overrides == {"train.learning_rate": 0.001, "distortion.kind": "zeros"}


def test_ensemble_reuses_finished_runs_and_appends_a_row(tmp_path, capsys):
    from helpers import make_run_dir

    from ssad.demo_data import make_demo_data
    from ssad.precision import resolve_precision

    data = make_demo_data(tmp_path / "brick", "brick", n_train=4, n_good=3, n_defect=1, size=64)
    precision = resolve_precision("auto")[0]  # the run-directory name holds what auto chose
    group = tmp_path / "work" / f"brick-tiny-64px-{precision}-1min-score.sigma=2"
    for seed, variant in enumerate(quality.ENSEMBLE):
        make_run_dir(group / variant, "tiny", seed=seed)
        (group / variant / "history.json").write_text(json.dumps([{"step": 10 + seed}]))
    results = tmp_path / "r.jsonl"
    row = quality.main(
        ["--data", str(data), "--variant", "ensemble", "--minutes", "1", "--preset", "tiny",
         "--workdir", str(tmp_path / "work"), "--results", str(results), "--set", "score.sigma=2"]
    )  # fmt: skip
    assert json.loads(results.read_text()) == row
    assert (row["dataset"], row["variant"], row["resolution"], row["steps"]) == (
        "brick",
        "ensemble",
        64,
        21,
    )
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0 <= row[key] <= 1
    metrics = json.loads((group / "ensemble" / "eval" / "metrics.json").read_text())
    assert metrics["run_dirs"] == [str(group / v) for v in quality.ENSEMBLE]
    assert metrics["n_images"] == 3 + 4


def test_score_sweep_matches_evaluate_and_rescores_from_the_held_out_images(tmp_path):
    import score_sweep
    from helpers import make_run_dir

    from ssad.demo_data import make_demo_data
    from ssad.evaluation import evaluate

    data = make_demo_data(tmp_path / "brick", "brick", n_train=4, n_good=3, n_defect=2, size=64)
    heldout = sorted((data / "train" / "good").iterdir())
    raw = {"score.sigma": 8.0, "score.map": "squared", "score.normalize": "none"}
    run = make_run_dir(tmp_path / "run", "tiny", overrides=raw, heldout=heldout)
    want, _ = evaluate([run], data, tmp_path / "eval")
    results = tmp_path / "sweep.jsonl"
    argv = [str(run), "--data", str(data), "--grid", "score.sigma=8,1", "--results", str(results)]
    rows = score_sweep.main(
        argv + ["--grid", "score.normalize=none", "--grid", "score.map=squared"]
    )
    assert [r["settings"] for r in rows] == [
        {"score.sigma": 8, "score.normalize": "none", "score.map": "squared"},
        {"score.sigma": 1, "score.normalize": "none", "score.map": "squared"},
    ]
    # the run's own settings (its calibration is "manual", made for no statistics) give
    # what evaluate gives; another sigma recalibrates on the held-out images
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert rows[0][key] == pytest.approx(want[key], abs=1e-4)
    assert rows[0]["pixel_auroc"] != rows[1]["pixel_auroc"]  # the smoothing does change it
    rescored, _ = evaluate([run], data, tmp_path / "eval1", score_overrides=rows[1]["settings"])
    assert rows[1]["image_auroc"] == pytest.approx(rescored["image_auroc"], abs=1e-4)
    assert rows[1]["normalize"] == rescored["normalize"] == "none"
    assert [json.loads(line) for line in results.read_text().splitlines()] == rows
    table = score_sweep.table(rows)
    assert "| map=squared, normalize=none, sigma=1 |" in table and "brick" in table


def test_score_sweep_table_merges_demo_data_of_several_seeds():
    import score_sweep

    def row(dataset, value):
        metrics = {"image_auroc": value, "pixel_auroc": value, "aupro": None}
        return {"dataset": dataset, "settings": {"score.image": "max"}, "commit": "c", **metrics}

    rows = [row("brick0", 0.6), row("brick1", 0.8), row("mvtec3d_tire", 0.5)]
    lines = score_sweep.table(rows).splitlines()
    assert lines[0].startswith("| settings | brick image auroc |")
    assert "mvtec3d_tire image auroc" in lines[0] and "brick0" not in lines[0]
    assert lines[2] == "| image=max | 0.700 ±0.100 (2) | 0.700 ±0.100 (2) | – | 0.500 | 0.500 | – |"


def test_score_sweep_fits_on_fewer_held_out_images(tmp_path):
    import score_sweep
    from helpers import make_run_dir

    from ssad.calibration import calibrate_on_good
    from ssad.demo_data import make_demo_data
    from ssad.detection import Detector
    from ssad.run import RunDir
    from ssad.scan import collect

    data = make_demo_data(tmp_path / "brick", "brick", n_train=4, n_good=3, n_defect=2, size=64)
    heldout = sorted((data / "train" / "good").iterdir())
    run = make_run_dir(tmp_path / "run", "tiny", heldout=heldout)
    argv = [str(run), "--data", str(data), "--grid", "score.normalize=pixel", "--heldout", "2,4"]
    rows = score_sweep.main(argv)
    assert [r["settings"]["heldout"] for r in rows] == [2, 4]
    assert rows[0]["pixel_auroc"] != rows[1]["pixel_auroc"]  # other statistics
    detector = Detector.load(run, score_overrides={"score.normalize": "pixel"})
    detector.calibration, detector.statistics = calibrate_on_good(
        detector, RunDir(run).read_heldout()[:2]
    )
    found = collect(detector, data)[0].summary()
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert rows[0][key] == pytest.approx(found[key], abs=1e-4)


def test_quality_curve_plots_the_last_row_per_budget(tmp_path):
    from bench import quality_curve

    rows = [
        ("tire", "objective1", 10, 0.5), ("tire", "plain-ae", 10, 0.6),
        ("tire", "objective1", 30, 0.7), ("tire", "objective1", 30, 0.75),  # a rerun: last wins
        ("bottle", "objective1", 10, 0.9), ("bottle", "objective2", 10, 0.1),  # not plotted
    ]  # fmt: skip
    results = tmp_path / "rows.jsonl"
    results.write_text(
        "".join(
            json.dumps(
                {
                    "dataset": d,
                    "variant": v,
                    "minutes": m,
                    "steps": 10 * m,
                    "image_auroc": x,
                    "pixel_auroc": x,
                    "aupro": x,
                    "preset": "texture",
                    "overrides": {},
                }
            )
            + "\n"
            for d, v, m, x in rows
        )  # fmt: skip
    )
    got = quality_curve.main(["--results", str(results), "--out-dir", str(tmp_path / "png")])
    assert got == {
        "tire": {
            "objective1": [[10, 100, 0.5, 0.5, 0.5], [30, 300, 0.75, 0.75, 0.75]],
            "plain-ae": [[10, 100, 0.6, 0.6, 0.6]],
        },
        "bottle": {"objective1": [[10, 100, 0.9, 0.9, 0.9]]},
    }
    for name in ("tire", "bottle"):
        assert (tmp_path / "png" / f"quality_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_extend_from_trains_a_copy_of_the_shorter_run_on(tmp_path, monkeypatch):
    """The M0-minute run is copied (its report left out) and resumed with the longer budget;
    the shorter run stays as it was."""
    from helpers import make_run_dir

    from ssad.demo_data import make_demo_data
    from ssad.precision import resolve_precision

    data = make_demo_data(tmp_path / "brick", "brick", n_train=4, n_good=3, n_defect=1, size=64)
    precision = resolve_precision("auto")[0]
    short = tmp_path / "work" / f"brick-tiny-64px-{precision}-1min" / "plain-ae"
    make_run_dir(short, "tiny")
    (short / "eval").mkdir()
    calls = []

    def fake_train(config, data_dir, run_dir, resume):
        calls.append((config.train.max_minutes, Path(run_dir), resume))
        assert (Path(run_dir) / "model.keras").is_file() and not (Path(run_dir) / "eval").exists()

        class Result:
            steps = 42

        return Result()

    monkeypatch.setattr("ssad.training.train", fake_train)
    monkeypatch.setattr(
        "ssad.evaluation.evaluate",
        lambda runs, data_dir, out, progress: ({"resolution": 64, "image_auroc": 0.5,
            "pixel_auroc": 0.5, "aupro": 0.5, "seconds": 1.0, "n_images": 7,
            "normalize": "structure"}, []),
    )  # fmt: skip
    row = quality.main(
        ["--data", str(data), "--variant", "plain-ae", "--minutes", "3", "--preset", "tiny",
         "--extend-from", "1", "--workdir", str(tmp_path / "work"),
         "--results", str(tmp_path / "r.jsonl")]
    )  # fmt: skip
    longer = tmp_path / "work" / f"brick-tiny-64px-{precision}-3min" / "plain-ae"
    assert calls == [(3.0, longer, True)]
    assert (row["steps"], row["extended_from"], row["minutes"]) == (42, 1.0, 3.0)
    assert (short / "eval").is_dir()  # the shorter run is untouched


def test_corruption_area_weighs_a_corrupted_pixel_by_the_mask_share():
    out = corruption_area.main(["--crop", "64", "--crops", "64", "--lams", "0.5,0.9"])
    assert out["crops"] == 64
    # patch sides are 5-35 % of the crop side, the blob a part of the patch
    assert 0 < out["mask_share_median"] < 0.35**2 and 0 < out["mask_share_mean"] < 0.35**2
    weight = out["corrupted_pixel_weight"]
    assert weight["0.5"] > 1  # a corrupted pixel outweighs a normal one at the paper's lambda
    assert weight["0.9"] == pytest.approx(weight["0.5"] / 9, abs=0.01)  # (1 - lam) / lam
