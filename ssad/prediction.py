"""``predict_files``: any image files -> overlays, masks and scores, in one output folder."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ssad.data.readers import check_on_bad
from ssad.detection import BaseDetector, Detector
from ssad.errors import BadImageError, DataError
from ssad.files import atomic_write_text, output_dir
from ssad.images import is_image_file, read_image, write_png
from ssad.progress import progress_bar
from ssad.report import overlay


def predict_files(
    detector: str | os.PathLike | BaseDetector,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    threshold: float | None = None,
    on_bad: str = "error",
    progress: bool = False,
    score_overrides: dict | None = None,
) -> tuple[list[dict], list[BadImageError]]:
    """Score image files, folders (searched recursively) or glob patterns with ``detector``
    (or the run directory it names); write for each image ``<name>_overlay.png`` and
    ``<name>_mask.png`` at the input's size, and ``scores.csv`` / ``scores.json`` with
    ``path``, ``score`` and ``is_anomalous`` per image. ``out_dir`` appears complete or not at
    all. Returns ``(rows, skipped)``: those rows, and the unreadable files with ``on_bad="skip"``.
    """
    check_on_bad(on_bad)
    if not isinstance(detector, BaseDetector):
        detector = Detector.load(detector, score_overrides=score_overrides)
    if threshold is not None:
        detector = detector.with_threshold(threshold)
    paths = expand_inputs(inputs)
    names = _output_names(paths)
    bar = progress_bar(len(paths)) if progress else None
    rows: list[dict] = []
    skipped: list[BadImageError] = []
    with output_dir(out_dir, marker="scores.json") as out:
        for start in range(0, len(paths), batch_size):
            chunk = list(zip(paths, names, strict=True))[start : start + batch_size]
            images, sources = {}, {name: path for path, name in chunk}
            for path, name in chunk:
                try:
                    images[name] = read_image(path)
                except BadImageError as e:
                    if on_bad == "error":
                        raise
                    skipped.append(e)
            if images:
                found = detector.predict(list(images.values()), batch_size)
                for i, (name, image) in enumerate(images.items()):
                    picture = overlay(image, found["heatmap"][i], detector.pixel_threshold)
                    write_png(out / f"{name}_overlay.png", picture)
                    write_png(out / f"{name}_mask.png", found["mask"][i])
                    rows.append(
                        {
                            "path": str(sources[name]),
                            "score": float(found["score"][i]),
                            "is_anomalous": bool(found["is_anomalous"][i]),
                            "overlay": f"{name}_overlay.png",
                            "mask": f"{name}_mask.png",
                        }
                    )
            if bar is not None:
                bar.add(len(chunk))
        if not rows:
            raise DataError(f"none of the {len(paths)} images could be read")
        write_scores_csv(out / "scores.csv", rows, ["path", "score", "is_anomalous"])
        atomic_write_text(out / "scores.json", json.dumps(rows, indent=2) + "\n")
    return rows, skipped


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


def write_scores_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows([r[f] for f in fields] for r in rows)
    atomic_write_text(path, buffer.getvalue())
