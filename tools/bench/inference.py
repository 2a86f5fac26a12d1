"""Inference speed against the machine's matmul peak.

``python tools/benchmark.py inference [--quick] [--repeats N] [--presets paper,demo]
[--sizes 256,512] [--batches 1,8] [--dtypes float32,bfloat16] [--run RUN_DIR ...]``

Times ``ssad.scoring.anomaly_maps`` in a ``tf.function`` (what ``Detector`` and the export
run: resize, pad, autoencoder, heatmap, smoothing, score) on random images, for each preset,
square size, batch and compute dtype. The same run measures ``tf.matmul`` of two 4096x4096
matrices in each dtype (twice at the start and once before each row; the best is the peak),
and reports

- ``images_per_s`` (best of ``repeats`` timed calls after one warm-up call);
- ``fraction_of_matmul_peak`` = model FLOP per image (``ssad.model.count_flops``) x
  images/s / matmul FLOP/s of the row's dtype, and ``useful_fraction_of_matmul_peak`` with
  only the products that meet data (``count_flops(useful=True)``);
- ``keras_images_per_s`` (float32 rows): the stock Keras forward ``model(x)`` alone, for
  comparison with the inference graph;
- ``bfloat16_speedup`` and ``max_abs_heatmap_diff_vs_float32`` (bfloat16 rows).

Preset models are freshly initialised: speed does not depend on the weights, but their
near-constant output understates the bfloat16 heatmap difference; ``--run RUN_DIR`` adds rows
for a trained model (``preset`` is then the run directory) to measure it. bfloat16 rows are
skipped unless the CPU reports AVX512-BF16 or AMX-BF16 (or ``--dtypes`` asks for them).
Progress goes to stderr. The machine should be otherwise idle; ratios survive noise better
than absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial

N_MATMUL = 4096


def _cpuinfo() -> dict[str, str]:
    """First value of each field of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _best_seconds(fn, x, repeats: int) -> float:
    """Best wall time of ``repeats`` calls ``fn(x)``, each waiting for the first output."""
    import tensorflow as tf

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.flatten(fn(x))[0].numpy()
        times.append(time.perf_counter() - start)
    return min(times)


def _matmul_probe(dtype: str):
    """A function that times one 4096x4096 ``tf.matmul`` in ``dtype`` and returns FLOP/s."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal((N_MATMUL, N_MATMUL)), dtype)
    b = tf.cast(rng.normal((N_MATMUL, N_MATMUL)), dtype)
    matmul = tf.function(lambda x: tf.matmul(x, b))
    matmul(a).numpy()
    return lambda: 2 * N_MATMUL**3 / _best_seconds(matmul, a, 1)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark.py inference")
    p.add_argument("--quick", action="store_true", help="512 px and batch 1 only, 2 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 3)")
    p.add_argument("--presets", default="paper,demo", help="comma-separated; '' for none")
    p.add_argument("--run", action="append", default=[], help="also time this trained run")
    p.add_argument("--sizes", default=None, help="default 256,512")
    p.add_argument("--batches", default=None, help="default 1,8")
    p.add_argument("--dtypes", default=None, help="default float32 and, if supported, bfloat16")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ("512" if args.quick else "256,512")
    args.batches = args.batches or ("1" if args.quick else "1,8")
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.dtypes is None:
        bf16 = {"avx512_bf16", "amx_bf16"} & set(_cpuinfo().get("flags", "").split())
        args.dtypes = "float32,bfloat16" if bf16 else "float32"
    return args


def main(argv: list[str]) -> dict:
    args = _parse(argv)
    import numpy as np
    import tensorflow as tf

    import ssad
    from bench.quality import git_commit
    from ssad.config import DataConfig
    from ssad.detection import Detector
    from ssad.model import count_flops
    from ssad.scoring import anomaly_maps

    dtypes = args.dtypes.split(",")
    probes = {d: _matmul_probe(d) for d in dtypes}
    peaks = {d: max(probes[d]() for _ in range(2)) for d in dtypes}
    _log(f"matmul: {', '.join(f'{d} {v / 1e9:.0f} GFLOP/s' for d, v in peaks.items())}")

    models = []
    for name in filter(None, args.presets.split(",")):
        cfg = ssad.Config.preset(name)
        models.append((name, ssad.build_autoencoder(cfg.model), cfg))
    for run_dir in args.run:
        detector = Detector.load(run_dir, require_calibration=False)
        models.append((run_dir, detector.model, detector.config))
    rows = []
    for preset, model, cfg in models:
        keras_forward = tf.function(lambda x, m=model: m(x, training=False))
        for size in (int(s) for s in args.sizes.split(",")):
            flops = count_flops(model, size, size)
            useful = count_flops(model, size, size, useful=True)
            sigma = cfg.score.sigma * size / 256
            square = DataConfig(resolution=size, resize="square")
            for batch in (int(b) for b in args.batches.split(",")):
                images = tf.random.stateless_uniform((batch, size, size, 3), seed=(size, batch))
                heatmaps = {}
                for dtype in dtypes:
                    # The peak is the best matmul seen in the run, probed again before each
                    # row, so that a busy moment does not inflate the fractions.
                    peaks[dtype] = max(peaks[dtype], probes[dtype]())
                    maps = tf.function(
                        partial(anomaly_maps, model, data=square, sigma=sigma, dtype=dtype)
                    )
                    heatmaps[dtype] = maps(images)[0].numpy()  # also traces
                    seconds = _best_seconds(maps, images, args.repeats)
                    row = {
                        "preset": preset,
                        "size": size,
                        "batch": batch,
                        "dtype": dtype,
                        "images_per_s": batch / seconds,
                        "flop_per_image": flops,
                        "useful_flop_per_image": useful,
                    }
                    note = ""
                    if dtype == "float32":
                        keras_forward(images)
                        k = _best_seconds(keras_forward, images, args.repeats)
                        row["keras_images_per_s"] = batch / k
                        note = f", stock Keras forward {batch / k:.3f} img/s"
                    elif "float32" in heatmaps:
                        diff = np.abs(heatmaps[dtype] - heatmaps["float32"]).max()
                        row["max_abs_heatmap_diff_vs_float32"] = float(diff)
                        base = next(r for r in rows[::-1] if r["dtype"] == "float32")
                        row["bfloat16_speedup"] = row["images_per_s"] / base["images_per_s"]
                        note = f", {row['bfloat16_speedup']:.2f}x float32, max diff {diff:.1e}"
                    rows.append(row)
                    fraction = flops * row["images_per_s"] / peaks[dtype]
                    _log(
                        f"{preset} {size}px batch {batch} {dtype}: "
                        f"{row['images_per_s']:.3f} img/s, "
                        f"{fraction:.2f} of matmul peak so far{note}"
                    )
    for row in rows:
        for key in ("", "useful_"):
            row[f"{key}fraction_of_matmul_peak"] = (
                row[f"{key}flop_per_image"] * row["images_per_s"] / peaks[row["dtype"]]
            )
    return {
        "matmul_flops_per_s": peaks,
        "results": rows,
        "tensorflow": tf.__version__,
        "cpu": _cpuinfo().get("model name", platform.machine()),
        "cpu_count": os.cpu_count(),
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "repeats": args.repeats,
        "commit": git_commit(),
    }
