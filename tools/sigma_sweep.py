"""Image AUROC, pixel AUROC and AUPRO of trained runs for several heatmap smoothing widths
(``score.sigma``, pixels at 256), without retraining: what the sigma default was tuned with.

    python tools/sigma_sweep.py RUN_DIR... --data DIR [--sigmas 2,4,8,12,16]

Prints one JSON object per run and sigma (pixel metrics only where the data set has masks).
Metrics are computed at the working resolution, as ``ssad evaluate`` does by default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout data set folder")
    p.add_argument("--sigmas", default="2,4,8,12,16", help="comma-separated (default: %(default)s)")
    args = p.parse_args(argv)
    sigmas = [float(s) for s in args.sigmas.split(",")]

    from ssad import metrics
    from ssad.data.readers import test_samples
    from ssad.detection import Detector, has_masks, is_defective, scan

    samples = test_samples(args.data)
    with_masks = has_masks(samples)
    rows = []
    for run in args.runs:
        trained = Detector.load(run)
        for sigma in sigmas:
            config = trained.config.override({"score.sigma": sigma})
            detector = Detector(trained.model, config, trained.calibration)
            labels, scores, pixels = [], [], metrics.PixelMetrics()
            for sample, _, mask, heatmap, score in scan(detector, samples, 8, detector.resolution):
                labels.append(is_defective(sample, mask))
                scores.append(score)
                if with_masks:
                    pixels.update(heatmap, mask)
            row = {
                "run": str(run),
                "sigma": sigma,
                "image_auroc": round(metrics.auroc(labels, scores), 4),
                "pixel_auroc": round(pixels.auroc(), 4) if with_masks else None,
                "aupro": round(pixels.aupro(), 4) if with_masks else None,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
