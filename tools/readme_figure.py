"""Render the README's picture from a finished ``ssad demo`` run.

    python tools/readme_figure.py ssad_demo/run_brick ssad_demo/data_brick docs/demo.png

One column per defect type (its best-scoring test image): the input on top, the heatmap
overlay below (cyan: predicted defect outline, green: ground truth).
"""

from __future__ import annotations

import sys

import numpy as np

import ssad
from ssad.report import overlay


def main(run_dir: str, data_dir: str, out: str) -> None:
    detector = ssad.Detector.load(run_dir)
    samples = ssad.data.test_samples(data_dir)
    columns = []
    for defect in sorted({s.defect for s in samples} - {"good"}):
        read = [ssad.data.read_sample(s) for s in samples if s.defect == defect]
        images = np.stack([image for image, _ in read])
        result = detector.predict(images)
        best = int(np.argmax(result["score"]))
        shown = overlay(
            images[best], result["heatmap"][best], detector.pixel_threshold, read[best][1]
        )
        columns.append(np.concatenate([(images[best] * 255).astype(np.uint8), shown], axis=0))
    gap = np.full((columns[0].shape[0], 4, 3), 255, np.uint8)
    ssad.images.write_png(out, np.concatenate([c for col in columns for c in (col, gap)][:-1], 1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
