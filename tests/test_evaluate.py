"""ssad evaluate and ssad predict on generated data: files, keys, and agreement with Detector."""

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_run_dir
from sklearn.metrics import roc_auc_score

from ssad.cli import main
from ssad.data.readers import read_sample, test_samples
from ssad.demo_data import make_demo_data
from ssad.detection import Detector
from ssad.evaluation import evaluate
from ssad.images import read_image, read_mask

KEYS = (
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "f1_image",
    "f1_pixel",
    "threshold",
    "resolution",
    "n_images",
    "seconds",
    "per_defect",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("run"), pixel_threshold=0.03, image_threshold=0.06)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "demo"
    return make_demo_data(root, n_train=1, n_good=3, n_defect=2, size=64)


def test_evaluate_writes_the_report_with_the_listed_keys(run_dir, data, tmp_path):
    out = tmp_path / "report"
    args = ["evaluate", str(run_dir), str(data), "--out", str(out), "--batch-size", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "image AUROC" in result.output and "pixel AUROC" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(KEYS) <= set(m)
    assert m["n_images"] == 11 and m["resolution"] == 64 and m["threshold"] == 0.03
    assert set(m["per_defect"]) == {"crack", "hole", "scratch", "stain"}
    for entry in [m, *m["per_defect"].values()]:
        for key in ("image_auroc", "pixel_auroc", "aupro", "f1_image", "f1_pixel"):
            assert 0.0 <= entry[key] <= 1.0, key
    assert m["per_defect"]["hole"]["n_images"] == 5
    html = (out / "index.html").read_text()
    for png in ("roc_image.png", "roc_pixel.png", "pro.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and png in html
    gallery = sorted((out / "gallery").glob("*.png"))
    assert gallery and all(f"gallery/{p.name}" in html for p in gallery)
    assert read_image(gallery[0]).shape == (64, 64 * 2 + 4, 3)  # input | overlay
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11 and {r["defect"] for r in rows} >= {"good", "crack"}


def test_evaluate_metrics_agree_with_exact_computation(run_dir, data, tmp_path):
    m, _ = evaluate(run_dir, data, tmp_path / "report", batch_size=3, gallery_size=0)
    detector = Detector.load(run_dir)
    samples = test_samples(data)
    pairs = [read_sample(s) for s in samples]
    heatmap, score = detector.maps(np.stack([image for image, _ in pairs]))
    masks = np.stack([np.zeros((64, 64), bool) if mask is None else mask for _, mask in pairs])
    labels = np.array([s.defect != "good" for s in samples])
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, score), abs=1e-9)
    assert abs(m["pixel_auroc"] - roc_auc_score(masks.ravel(), heatmap.ravel())) < 1e-3
    crack = np.array([s.defect in ("good", "crack") for s in samples])
    expected = roc_auc_score(masks[crack].ravel(), heatmap[crack].ravel())
    assert abs(m["per_defect"]["crack"]["pixel_auroc"] - expected) < 1e-3
    found = heatmap >= 0.03
    tp, fp = np.sum(found & masks), np.sum(found & ~masks)
    assert m["f1_pixel"] == pytest.approx(2 * tp / (tp + fp + masks.sum()))


def test_evaluate_without_masks_gives_null_pixel_metrics(run_dir, data, tmp_path):
    copy = tmp_path / "nomasks"
    shutil.copytree(data / "test", copy / "test")
    m, _ = evaluate(run_dir, copy, tmp_path / "report", threshold=0.05, gallery_size=1)
    assert m["pixel_auroc"] is None and m["aupro"] is None and m["f1_pixel"] is None
    assert m["image_auroc"] is not None and m["threshold_method"] == "manual"
    assert m["threshold"] == 0.05 and m["image_threshold"] == 0.05
    assert (tmp_path / "report" / "roc_image.png").exists()
    assert not (tmp_path / "report" / "pro.png").exists()


def test_predict_outputs_agree_with_detector_predict(run_dir, data, tmp_path):
    out = tmp_path / "pred"
    args = [
        "predict",
        str(run_dir),
        str(data / "test" / "good"),
        str(data / "test" / "h*" / "*.png"),
    ]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "scores.json").read_text())
    assert [r["path"].split("test/")[1] for r in rows] == [
        "good/000.png", "good/001.png", "good/002.png", "hole/000.png", "hole/001.png"
    ]  # fmt: skip
    with open(out / "scores.csv") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [r["path"] for r in rows]
    images = [read_image(r["path"]) for r in rows]
    expected = Detector.load(run_dir).predict(images)
    np.testing.assert_allclose([r["score"] for r in rows], expected["score"], rtol=1e-5)
    assert [r["is_anomalous"] for r in rows] == expected["is_anomalous"].tolist()
    for row, mask in zip(rows, expected["mask"], strict=True):
        assert row["mask"] in (
            f"good__{row['path'][-7:-4]}_mask.png",
            f"hole__{row['path'][-7:-4]}_mask.png",
        )
        np.testing.assert_array_equal(read_mask(out / row["mask"]), mask)
        assert read_image(out / row["overlay"]).shape == (64, 64, 3)


def test_set_rescores_a_run_from_its_held_out_images(data, tmp_path):
    heldout = sorted((data / "train" / "good").iterdir())
    run = make_run_dir(tmp_path / "run", heldout=heldout)
    out = tmp_path / "report"
    args = ["evaluate", str(run), str(data), "--out", str(out)]
    args += ["--set", "score.normalize=pixel", "--set", "score.image=max"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["normalize"] == "pixel" and metrics["score"]["image"] == "max"
    assert metrics["threshold_method"] == "good-quantile"  # recalibrated, not the stored manual
    stored = json.loads((run / "calibration.json").read_text())
    assert stored["method"] == "manual"  # the run directory is not changed
    bad = CliRunner().invoke(main, args[:5] + ["--set", "train.lam=0.3"])
    assert bad.exit_code == 1 and "only score.* settings" in bad.output
    bad = CliRunner().invoke(main, args[:5] + ["--set", "score.image"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output
