"""Section ``export-parity``: ONNX and OpenVINO exports against ``Detector`` on real images.

    python tools/benchmark.py export-parity --run RUN_DIR --data DIR [--run ... --data ...]
        [--formats onnx,openvino] [--odd-size 200x152] [--openvino-precision f32|bf16]

Exports each run with ``ssad export --format F`` into a temporary folder, scores every test
image of its data set (each at its own size, one at a time, and once more cropped at its
centre to ``--odd-size``) with the export (OpenVINO exported with ``--precision`` from
``--openvino-precision``, float32 by default) and with ``Detector``, and reports per run,
format and size (``own_size``, ``odd_size``) the largest heatmap difference over the
export's finite pixels, absolute and relative to ``max(1, |heatmap|)`` (a heatmap of a few
hundred, which upscaled crops give, has float32 steps of 3e-5), its non-finite pixels, the
share of pixels that differ by more than 1e-4 (NaN included; absolute and relative), the
largest relative score difference, the mask pixels and image labels that differ, and both
runtimes' seconds per image (own size).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="benchmark.py export-parity", description=__doc__)
    p.add_argument("--run", action="append", type=Path, required=True, help="run directory")
    p.add_argument("--data", action="append", type=Path, required=True, help="its data set")
    p.add_argument("--formats", default="onnx,openvino", help="comma-separated export formats")
    p.add_argument("--odd-size", default="200x152", help="HxW centre crop also compared")
    p.add_argument("--openvino-precision", default="f32", choices=("f32", "bf16"))
    args = p.parse_args(argv)
    if len(args.run) != len(args.data):
        p.error("give one --data per --run")
    from bench.quality import git_commit

    odd = tuple(int(v) for v in args.odd_size.split("x"))
    runs = [
        _compare(run, data, format, odd, args.openvino_precision)
        for run, data in zip(args.run, args.data, strict=True)
        for format in args.formats.split(",")
    ]
    return {"runs": runs, "odd_size": list(odd), "commit": git_commit()}


def _crop(image, size: tuple[int, int]):
    h, w = min(size[0], image.shape[0]), min(size[1], image.shape[1])
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[top : top + h, left : left + w]


def _compare(run: Path, data: Path, format: str, odd: tuple[int, int], precision: str) -> dict:
    from ssad.data.readers import read_sample, test_samples
    from ssad.detection import Detector
    from ssad.export import export
    from ssad.runtimes import ExportedDetector

    detector = Detector.load(run)
    worst = {size: _Worst() for size in ("own_size", "odd_size")}
    seconds = {"tensorflow": 0.0, format: 0.0}
    with tempfile.TemporaryDirectory(prefix="ssad-parity-") as tmp:
        precision = precision if format == "openvino" else "f32"
        path = export(run, Path(tmp) / "export", format=format, precision=precision)
        exported = ExportedDetector(path, 8)
        samples = test_samples(data)
        for sample in samples:
            image = read_sample(sample)[0]
            for size, x in (("own_size", image[None]), ("odd_size", _crop(image, odd)[None])):
                t0 = time.perf_counter()
                want = detector.predict(x)
                t1 = time.perf_counter()
                got = exported.predict(x)
                if size == "own_size":
                    seconds[format] += time.perf_counter() - t1
                    seconds["tensorflow"] += t1 - t0
                worst[size].add(got, want)
    n = len(samples)
    return {
        "run": str(run),
        "dataset": data.resolve().name,
        "format": format,
        "precision": precision,
        "n_images": n,
        **{size: w.summary() for size, w in worst.items()},
        "seconds_per_image": {k: round(v / n, 4) for k, v in seconds.items()},
    }


class _Worst:
    """The largest differences between an export's outputs and ``Detector``'s."""

    def __init__(self):
        self.heatmap = self.heatmap_rel = self.score_rel = self.largest = 0.0
        self.mask_pixels = self.labels = self.over = self.over_rel = self.pixels = 0
        self.non_finite = 0

    def add(self, got: dict, want: dict) -> None:
        import numpy as np

        diff = np.abs(got["heatmap"] - want["heatmap"])
        finite = np.isfinite(got["heatmap"])
        self.non_finite += int((~finite).sum())
        self.heatmap = max(self.heatmap, float(diff[finite].max(initial=0.0)))
        self.over += int((~(diff <= 1e-4)).sum())  # NaN counts as over
        # relative to the heatmap's size where it exceeds 1: float32 resolves a z-score of
        # 500 only to 3e-5, so an absolute 1e-4 asks for more than its last bit there
        rel = diff / np.maximum(np.abs(want["heatmap"]), 1.0)
        self.heatmap_rel = max(self.heatmap_rel, float(rel[finite].max(initial=0.0)))
        self.over_rel += int((~(rel <= 1e-4)).sum())
        self.largest = max(self.largest, float(np.abs(want["heatmap"]).max()))
        self.pixels += diff.size
        # scores are z-scores too, and may lie near 0: relative to their size where it exceeds 1
        rel = np.abs(got["score"] - want["score"]) / np.maximum(np.abs(want["score"]), 1.0)
        self.score_rel = max(self.score_rel, float(np.nan_to_num(rel, nan=np.inf).max()))
        self.mask_pixels += int((got["mask"] != want["mask"]).sum())
        self.labels += int((got["is_anomalous"] != want["is_anomalous"]).sum())

    def summary(self) -> dict:
        return {
            "max_abs_heatmap_diff": self.heatmap,  # over the export's finite pixels
            "non_finite_heatmap_pixels": self.non_finite,
            "share_of_pixels_over_1e-4": self.over / self.pixels,
            "max_heatmap_diff_relative": self.heatmap_rel,  # |diff| / max(1, |heatmap|)
            "share_of_pixels_over_1e-4_relative": self.over_rel / self.pixels,
            "largest_abs_heatmap": self.largest,
            "max_rel_score_diff": self.score_rel,
            "mask_pixels_differing": self.mask_pixels,
            "labels_differing": self.labels,
        }
