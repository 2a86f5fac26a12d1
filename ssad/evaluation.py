"""Running detectors over image files: ``evaluate`` (a labelled data set -> metrics and an HTML
report) and ``predict_files`` (any images -> overlays, masks and scores).

Both stream: images are read, scored and dropped a batch at a time. ``evaluate`` keeps one score
per image, the fixed-size pixel histograms of ``ssad.metrics.PixelMetrics`` per defect type and
the gallery's few pictures, so its memory does not grow with the number of test images. Pixel
metrics are computed at the square working resolution of the (first) run when it squares its
images, masks resized with nearest-neighbour sampling, else at each image's own size
(``resolution`` to set a square side).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssad import metrics
from ssad.data.readers import test_samples
from ssad.detection import (
    Detector,
    has_masks,
    is_defective,
    load_detector,
    metrics_resolution,
    scan,
)
from ssad.errors import BadImageError, DataError
from ssad.files import atomic_write_text
from ssad.images import is_image_file, read_image, write_png
from ssad.progress import progress_bar
from ssad.report import Gallery, overlay, write_report

RunDirs = str | os.PathLike | Sequence[str | os.PathLike]


def evaluate(
    run_dirs: RunDirs,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    threshold: float | None = None,
    resolution: int | None = None,
    skip_bad: bool = False,
    gallery_size: int = 6,
    progress: bool = False,
    score_overrides: dict | None = None,
) -> dict:
    """Evaluate one run directory (or an ensemble of several) on ``data_dir`` and write the
    report to ``out_dir``: ``metrics.json``, ``scores.csv``, ROC and PRO curves, a gallery and
    ``index.html``. Returns the content of ``metrics.json``.

    ``data_dir``: an MVTec AD category (``test/<defect>/``, ``ground_truth/<defect>/``) or a
    folder of images. ``threshold`` overrides the stored pixel and image thresholds;
    ``score_overrides`` (``{"score.image": "mean_max"}``) rescore the runs without retraining.
    """
    start = time.perf_counter()
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    detector = load_detector(run_dirs, threshold, score_overrides)
    samples = test_samples(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # fail on a bad --out before the long scan
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
    pixels: dict[str, metrics.PixelMetrics] = {}
    rows: list[dict] = []
    gallery = Gallery(gallery_size, pixel_threshold, image_threshold)
    skipped: list[BadImageError] | None = [] if skip_bad else None
    for sample, image, mask, heatmap, score in scan(
        detector, samples, batch_size, resolution, skipped, progress
    ):
        name = _relative(sample.path, data_dir)
        label = is_defective(sample, mask)
        rows.append(
            {
                "path": name,
                "defect": sample.defect,
                "label": label,
                "score": score,
                "is_anomalous": score >= image_threshold,
            }
        )
        if with_masks:
            pixels.setdefault(sample.defect, metrics.PixelMetrics(pixel_threshold))
            pixels[sample.defect].update(heatmap, mask)
        gallery.offer(name, sample.defect, label, score, image, heatmap, mask)
    if not rows:
        raise DataError(f"{data_dir}: none of the {len(samples)} test images could be read")
    result, curves = _summarise(rows, pixels, pixel_threshold, image_threshold)
    result.update(
        threshold=pixel_threshold,
        image_threshold=image_threshold,
        threshold_method=detector.calibration.get("method", "unknown"),
        resolution=resolution,
        n_images=len(rows),
        n_defective=sum(r["label"] for r in rows),
        seconds=round(time.perf_counter() - start, 3),
        run_dirs=[str(r) for r in run_dirs],
        data_dir=str(data_dir),
        score=dataclasses.asdict(detector.config.score),
        normalize=detector.calibration.get("normalize"),
        skipped=[{"path": e.path, "problem": e.problem} for e in skipped or []],
    )
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    _write_scores(out / "scores.csv", rows, ["path", "defect", "score", "is_anomalous"])
    write_report(out, result, curves, gallery)
    return result


def _summarise(
    rows: list[dict], pixels: dict, pixel_threshold: float, image_threshold: float
) -> tuple[dict, dict]:
    """(metrics of all images and per defect type, curves for the report)."""
    labels = np.array([r["label"] for r in rows], bool)
    scores = np.array([r["score"] for r in rows])
    defects = np.array([r["defect"] for r in rows])
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

    empty = metrics.PixelMetrics(pixel_threshold)
    result = group("all", np.ones(len(rows), bool), sum(pixels.values(), empty))
    result["per_defect"] = {}
    for defect in sorted(set(defects) - {"good", "unknown"}):
        pixel = pixels.get("good", empty) + pixels[defect] if defect in pixels else None
        chosen = (defects == "good") | (defects == defect)
        result["per_defect"][defect] = group(defect, chosen, pixel)
    return result, curves


def predict_files(
    run_dir: str | os.PathLike | Detector,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    threshold: float | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    score_overrides: dict | None = None,
) -> list[dict]:
    """Score image files, folders (searched recursively) or glob patterns; write for each
    image ``<name>_overlay.png`` and ``<name>_mask.png`` at the input's size, and
    ``scores.csv`` / ``scores.json`` with ``path``, ``score`` and ``is_anomalous`` per image.
    Returns those rows."""

    if isinstance(run_dir, Detector):
        detector = run_dir
    else:
        detector = Detector.load(run_dir, score_overrides=score_overrides)
    if threshold is not None:
        detector = detector.with_threshold(threshold)
    paths = expand_inputs(inputs)
    names = _output_names(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(len(paths)) if progress else None
    rows: list[dict] = []
    for start in range(0, len(paths), batch_size):
        chunk = list(zip(paths, names, strict=True))[start : start + batch_size]
        images, problems = {}, {}
        for path, name in chunk:
            try:
                images[name] = read_image(path)
            except BadImageError as e:
                if not skip_bad:
                    raise
                problems[name] = e.problem
        found = detector.predict(list(images.values()), batch_size) if images else None
        index = {name: i for i, name in enumerate(images)}
        for path, name in chunk:
            if name in problems:
                row = {"path": str(path), "score": None, "is_anomalous": None}
                rows.append({**row, "error": problems[name]})
                continue
            i = index[name]
            picture = overlay(images[name], found["heatmap"][i], detector.pixel_threshold)
            write_png(out / f"{name}_overlay.png", picture)
            write_png(out / f"{name}_mask.png", found["mask"][i])
            rows.append(
                {
                    "path": str(path),
                    "score": float(found["score"][i]),
                    "is_anomalous": bool(found["is_anomalous"][i]),
                    "overlay": f"{name}_overlay.png",
                    "mask": f"{name}_mask.png",
                }
            )
        if bar is not None:
            bar.add(len(chunk))
    _write_scores(out / "scores.csv", rows, ["path", "score", "is_anomalous"])
    atomic_write_text(out / "scores.json", json.dumps(rows, indent=2) + "\n")
    return rows


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from files, folders (recursively, sorted) and glob patterns, in order,
    without repeats; ``DataError`` when an input matches nothing."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_image_file(f))
        elif p.exists():
            found = [p]
        else:
            found = sorted(
                Path(f) for f in glob.glob(str(item), recursive=True) if is_image_file(f)
            )
        if not found:
            raise DataError(f"{item}: no image files found there")
        paths.extend(found)
    return list(dict.fromkeys(paths))


def _output_names(paths: list[Path]) -> list[str]:
    """Output file stems: each path relative to the inputs' common folder, '/' -> '__'."""
    common = Path(os.path.commonpath([p.absolute().parent for p in paths]))
    return [
        str(p.absolute().relative_to(common).with_suffix("")).replace(os.sep, "__") for p in paths
    ]


def _relative(path: Path, root: str | os.PathLike) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write_scores(path: Path, rows: list[dict], fields: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows([r[f] for f in fields] for r in rows)
    atomic_write_text(path, buffer.getvalue())
