"""``evaluate``: a detector on a labelled data set -> metrics and an HTML report.

It streams (``ssad.scan``): images are read, scored and dropped a batch at a time, keeping one
score per image, the fixed-size pixel histograms per defect type and the gallery's few
pictures, so its memory does not grow with the number of test images. Pixel metrics are
computed at the square working resolution of the (first) run when it squares its images, masks
resized with nearest-neighbour sampling, else at each image's own size (``resolution`` to set
a square side).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssad import metrics
from ssad.data.readers import test_samples
from ssad.detection import load_detector
from ssad.errors import BadImageError, DataError
from ssad.files import atomic_write_text, output_dir
from ssad.prediction import write_scores_csv
from ssad.report import Gallery, write_report
from ssad.scan import Collector, Scan, has_masks, metrics_resolution

RunDirs = str | os.PathLike | Sequence[str | os.PathLike]


def evaluate(
    run_dirs: RunDirs,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    threshold: float | None = None,
    resolution: int | None = None,
    on_bad: str = "error",
    gallery_size: int = 6,
    progress: bool = False,
    score_overrides: dict | None = None,
) -> tuple[dict, list[BadImageError]]:
    """Evaluate one run directory (or an ensemble of several) on ``data_dir`` and write the
    report to ``out_dir``: ``metrics.json``, ``scores.csv``, ROC and PRO curves, a gallery and
    ``index.html`` (the folder appears complete or not at all). Returns ``(metrics,
    skipped)``: the content of ``metrics.json`` and the unreadable images (``on_bad="skip"``).

    ``data_dir``: an MVTec AD category (``test/<defect>/``, ``ground_truth/<defect>/``) or a
    folder of images. ``threshold`` overrides the stored pixel and image thresholds;
    ``score_overrides`` (``{"score.image": "mean_max"}``) rescore the runs without retraining.
    """
    start = time.perf_counter()
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    detector = load_detector(run_dirs, threshold, score_overrides)
    samples = test_samples(data_dir)
    resolution = resolution or metrics_resolution(detector)
    with_masks = has_masks(samples)
    unmasked = [s.path for s in samples if s.mask_path is None and s.defect != "good"]
    if unmasked and not with_masks and len(unmasked) < len(samples):
        warnings.warn(
            f"{unmasked[0]}: no mask ({len(unmasked)} defect images have none); "
            "pixel metrics are off, image metrics remain",
            stacklevel=2,
        )
    pixel_threshold, image_threshold = detector.pixel_threshold, detector.image_threshold
    collector = Collector(with_masks, pixel_threshold)
    rows: list[dict] = []
    gallery = Gallery(gallery_size, pixel_threshold, image_threshold)
    with output_dir(out_dir, marker="metrics.json") as out:  # a bad --out fails before the scan
        scan = Scan(detector, samples, batch_size, resolution, on_bad, progress)
        for item in scan:
            name = _relative(item.sample.path, data_dir)
            collector.add(item)
            rows.append(
                {
                    "path": name,
                    "defect": item.sample.defect,
                    "score": item.score,
                    "is_anomalous": item.score >= image_threshold,
                }
            )
            gallery.offer(
                name, item.sample.defect, item.label, item.score, item.image, item.heatmap,
                item.mask,
            )  # fmt: skip
        if not rows:
            raise DataError(f"{data_dir}: none of the {len(samples)} test images could be read")
        result, curves = _summarise(collector, image_threshold)
        result.update(
            threshold=pixel_threshold,
            image_threshold=image_threshold,
            threshold_method=detector.calibration.method,
            resolution=resolution,
            n_images=len(rows),
            n_defective=sum(collector.labels),
            seconds=round(time.perf_counter() - start, 3),
            run_dirs=[str(r) for r in run_dirs],
            data_dir=str(data_dir),
            score=dataclasses.asdict(detector.config.score),
            normalize=detector.calibration.normalize,
            image_normalize=detector.calibration.image_normalize,
            skipped=[{"path": e.path, "problem": e.problem} for e in scan.skipped],
        )
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
        write_scores_csv(out / "scores.csv", rows, ["path", "defect", "score", "is_anomalous"])
        write_report(out, result, curves, gallery)
    return result, scan.skipped


def _summarise(found: Collector, image_threshold: float) -> tuple[dict, dict]:
    """(metrics of all images and per defect type, curves for the report)."""
    labels = np.array(found.labels, bool)
    scores = np.array(found.scores)
    defects = np.array(found.defects)
    curves: dict[str, dict] = {"image_roc": {}, "pixel_roc": {}, "pro": {}}

    def group(name: str, chosen: np.ndarray, pixel: metrics.PixelMetrics | None) -> dict:
        image_auroc = metrics.auroc(labels[chosen], scores[chosen])
        if image_auroc is not None:
            curves["image_roc"][name] = metrics.roc_curve(labels[chosen], scores[chosen])
        entry = {
            "n_images": int(chosen.sum()),
            "image_auroc": image_auroc,
            "pixel_auroc": None,
            "aupro": None,
            "f1_image": metrics.f1_score(labels[chosen], scores[chosen] >= image_threshold),
            "f1_pixel": None,
        }
        if pixel is not None and pixel.has_defects:
            entry.update(pixel_auroc=pixel.auroc(), aupro=pixel.aupro(), f1_pixel=pixel.f1())
            curves["pixel_roc"][name] = pixel.roc_curve()
            curves["pro"][name] = pixel.pro_curve()
        return entry

    result = group("all", np.ones(len(labels), bool), found.pixel_metrics())
    result["per_defect"] = {}
    for defect in sorted(set(found.defects) - {"good", "unknown"}):
        chosen = (defects == "good") | (defects == defect)
        result["per_defect"][defect] = group(defect, chosen, found.pixel_metrics(defect))
    return result, curves


def _relative(path: Path, root: str | os.PathLike) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
