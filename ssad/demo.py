"""``run_demo``: the whole method on real pictures, on a laptop CPU, within a time budget.

It makes (or reuses) the demo data of ``ssad.demo_data``, trains the ``demo`` preset until its
steps are done or the budget says stop, evaluates on the drawn defects and writes the report::

    OUT/data_<texture>/    the data set, made once and reused by later runs
    OUT/run_<texture>/     the run directory, trained anew by every run
    OUT/report_<texture>/  metrics.json, scores.csv, ROC and PRO curves, gallery, index.html
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ssad.config import Config
from ssad.demo_data import make_demo_data
from ssad.errors import ConfigError, DataError
from ssad.evaluation import evaluate
from ssad.training import train

# Share of the budget kept for what follows training: calibration, saving, evaluation.
AFTER_TRAINING_SHARE = 0.15


@dataclass(frozen=True)
class DemoResult:
    data_dir: Path
    run_dir: Path
    report_dir: Path
    metrics: dict  # the content of report_dir/metrics.json
    seconds: float

    def summary(self) -> str:
        """Headline metrics and where everything is, as the CLI prints them."""
        m = self.metrics

        def fmt(key):
            return "-" if m.get(key) is None else f"{m[key]:.3f}"

        return "\n".join(
            [
                f"image AUROC {fmt('image_auroc')}   pixel AUROC {fmt('pixel_auroc')}   "
                f"AUPRO {fmt('aupro')}   ({m['n_images']} test images, "
                f"{m['n_defective']} with drawn defects; {self.seconds / 60:.1f} min in all)",
                f"report: {self.report_dir / 'index.html'}",
                f"model:  {self.run_dir}   data: {self.data_dir}",
            ]
        )


def run_demo(
    out: str | os.PathLike = "ssad_demo",
    texture: str = "brick",
    minutes: float = 5.0,
    preset: str = "demo",
    seed: int = 0,
    verbose: int = 1,
) -> DemoResult:
    """Make or reuse demo data under ``out``, train ``preset`` and evaluate it.

    ``minutes`` bounds the whole run: training gets what the data left of it, less a share
    for calibration and evaluation (a slow machine still trains at least one step per stage).
    """
    if minutes <= 0:
        raise ConfigError(f"the demo's time budget must be > 0 minutes, got {minutes}")
    start = time.perf_counter()
    out = Path(out)
    data_dir, run_dir = out / f"data_{texture}", out / f"run_{texture}"
    report_dir = out / f"report_{texture}"
    if not data_dir.exists():
        if verbose:
            print(f"making demo data in {data_dir}", flush=True)
        make_demo_data(data_dir, texture, seed=seed)
    elif not (data_dir / "train" / "good").is_dir() or not (data_dir / "test").is_dir():
        raise DataError(f"{data_dir}: not demo data (no train/good, test); remove it or use --out")
    left = minutes - (time.perf_counter() - start) / 60
    cfg = Config.preset(preset).override(
        {"train.max_minutes": max(left * (1 - AFTER_TRAINING_SHARE), 0.01), "train.seed": seed}
    )
    train(cfg, data_dir, run_dir, resume=False, verbose=verbose)
    metrics, _ = evaluate(run_dir, data_dir, report_dir, progress=verbose > 0)
    return DemoResult(data_dir, run_dir, report_dir, metrics, time.perf_counter() - start)
