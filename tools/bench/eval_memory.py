"""``python tools/benchmark.py eval-memory [--small 200] [--large 2000] [--size 512]``

Peak resident memory of ``ssad.evaluation.evaluate`` on ``--small`` and then ``--large``
generated test images of ``--size`` pixels square (half defect-free, half with a masked
defect), each evaluation in a fresh Python process that reports its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``). Pixel metrics are computed at the images' full size;
the model is an untrained ``tiny`` preset in a fabricated run directory (``tests/helpers.py``),
so the run takes minutes, not hours. Memory does not depend on the pixel values, so the data
set repeats (hard links to) 16 distinct images of each kind.

Prints ``peak_rss_mb_small``, ``peak_rss_mb_large`` and ``ratio`` (target: at most 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DISTINCT = 16


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="benchmark.py eval-memory")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--child", nargs=3, metavar=("RUN", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _measure(*args.child, args.size, args.batch_size)

    with tempfile.TemporaryDirectory(prefix="ssad-eval-memory-") as tmp:
        tmp = Path(tmp)
        from ssad.config import Config
        from ssad.run import untrained_run

        run = untrained_run(tmp / "run", Config.preset("tiny"), 0.05, 0.1).path
        results = {}
        for name, n in (("small", args.small), ("large", args.large)):
            data = _make_data(tmp / f"data_{n}", n, args.size)
            command = [sys.executable, str(REPO / "tools" / "benchmark.py"), "eval-memory"]
            command += ["--size", str(args.size), "--batch-size", str(args.batch_size)]
            command += ["--child", str(run), str(data), str(tmp / f"report_{n}")]
            print(f"evaluating {n} images ...", file=sys.stderr, flush=True)
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"evaluation of {n} images failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    small, large = results["small"], results["large"]
    return {
        "peak_rss_mb_small": small["peak_rss_mb"],
        "peak_rss_mb_large": large["peak_rss_mb"],
        "ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "n_small": small["n_images"],
        "n_large": large["n_images"],
        "seconds_small": small["seconds"],
        "seconds_large": large["seconds"],
        "size": args.size,
    }


def _measure(run: str, data: str, out: str, size: int, batch_size: int) -> dict:
    from ssad.evaluation import evaluate

    result, _ = evaluate(run, data, out, batch_size=batch_size, resolution=size)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "n_images": result["n_images"],
        "seconds": result["seconds"],
    }


def _make_data(root: Path, n: int, size: int) -> Path:
    """An MVTec-layout folder: ``n // 2`` good images, the rest with a disc-shaped defect."""
    import numpy as np

    from ssad.images import resize, write_png

    rng = np.random.default_rng(0)
    folders = {
        "good": root / "test" / "good",
        "defect": root / "test" / "spot",
        "mask": root / "ground_truth" / "spot",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(DISTINCT):
        coarse = rng.random((8, 8, 3)).astype(np.float32)
        image = 0.3 + 0.4 * resize(coarse, size, size)
        write_png(folders["good"] / f"{i:04d}.png", image)
        cy, cx, r = rng.integers(size // 8, size - size // 8, 2).tolist() + [size // 16]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        write_png(folders["defect"] / f"{i:04d}.png", np.where(mask[..., None], 0.9, image))
        write_png(folders["mask"] / f"{i:04d}_mask.png", mask)
    for i in range(DISTINCT, n - n // 2):
        source = i % DISTINCT
        os.link(folders["good"] / f"{source:04d}.png", folders["good"] / f"{i:04d}.png")
    for i in range(DISTINCT, n // 2):
        source = i % DISTINCT
        os.link(folders["defect"] / f"{source:04d}.png", folders["defect"] / f"{i:04d}.png")
        os.link(folders["mask"] / f"{source:04d}_mask.png", folders["mask"] / f"{i:04d}_mask.png")
    return root
