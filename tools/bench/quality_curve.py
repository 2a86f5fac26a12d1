"""Section ``quality-curve``: detection quality against training minutes, one PNG per data set.

    python tools/benchmark.py quality-curve --results FILE --out-dir DIR [--preset NAME]
        [--variants a,b] [--overrides JSON]

Takes the rows of a ``quality`` results file with the given preset, variants and overrides
(default: none), keeps the last row per (data set, variant, minutes), and plots image AUROC,
pixel AUROC and AUPRO against minutes, one line per variant, to ``DIR/quality_<data set>.png``.
Returns ``{data set: {variant: [[minutes, steps, image, pixel, aupro], ...]}}``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from bench.quality import DEFAULT_RESULTS

METRICS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"))


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="benchmark.py quality-curve", description=__doc__)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON-lines file")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the PNGs")
    p.add_argument("--preset", default="texture")
    p.add_argument("--variants", default="objective1,plain-ae")
    p.add_argument("--overrides", default="{}", help="the rows' overrides, as JSON")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    overrides = json.loads(args.overrides)
    curves: dict[str, dict[str, dict[float, list]]] = {}
    for line in args.results.read_text().splitlines():
        row = json.loads(line)
        if (
            row["preset"] != args.preset
            or row["variant"] not in variants
            or row.get("overrides", {}) != overrides
        ):
            continue
        point = [row["minutes"], row["steps"], row["image_auroc"], row["pixel_auroc"], row["aupro"]]
        curves.setdefault(row["dataset"], {}).setdefault(row["variant"], {})[row["minutes"]] = point
    result = {
        dataset: {v: [by[m] for m in sorted(by)] for v, by in lines.items()}
        for dataset, lines in curves.items()
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for dataset, lines in result.items():
        _plot(dataset, lines, args.out_dir / f"quality_{dataset}.png")
    return result


def _plot(dataset: str, lines: dict[str, list], path: Path) -> None:
    from matplotlib.figure import Figure

    from ssad.files import atomic_write_bytes

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (column, (_, title)) in zip(axes, enumerate(METRICS, start=2), strict=True):
        for variant, points in sorted(lines.items()):
            minutes = [pt[0] for pt in points]
            values = [pt[column] for pt in points]
            ax.plot(minutes, values, marker="o", label=variant)
        ax.set_xlabel("training minutes (one core)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.suptitle(f"{dataset}: quality against training budget")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    atomic_write_bytes(path, buffer.getvalue())
