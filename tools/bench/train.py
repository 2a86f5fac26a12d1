"""``python tools/benchmark.py train``: training speed of each stage of a preset's schedule.

For every stage of ``--preset`` (crop side, batch size), in the training precision
``--mixed-precision`` (default ``auto``, resolved as ``ssad train`` does), after ``--warmup``
steps of tracing and autotuning:

- seconds per ``model.fit`` step and images per second with the real input pipeline
  (``ssad.data.train_dataset``: crops, flips, distortion), and with one cached batch repeated;
  ``overhead_ratio`` = their quotient (1.0: the pipeline keeps up), and
  ``pipeline_overhead_ratio`` over the whole schedule, stages weighted by their share of steps;
- ``fraction_of_matmul_peak``: 3 x forward FLOPs per image (forward and backward pass) x images/s
  over the same run's ``tf.matmul`` peak in the compute dtype; ``useful_fraction_of_matmul_peak``
  counts only the products that meet data (``count_flops(useful=True)``);
- ``all_taps_speedup``: cached-batch step time with the dilated convolutions' padding-only taps
  kept (``ssad.layers.PRUNE_PADDING_TAPS = False``) over the time without them;
- ``float32_speedup`` (when the precision is not float32): float32 cached step time over this one;
- ``keras_batchnorm_speedup``: cached step time with Keras' own batch normalisation
  (``ssad.batchnorm.FUSE = False``) over the time with the fused kernel, and
  ``float32_keras_batchnorm_speedup`` the same in float32 over this one (the step of the
  releases before the fused layer, when float32 was the default).

Step times are medians over the timed steps (robust to the odd slow step of a shared machine).

Images: the training images of ``--data`` (default: the shared tire set when present), else
generated noise. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import SHARED_TIRE, bench_images


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="benchmark.py train")
    parser.add_argument("--preset", default="texture", help="preset whose stages are timed")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--data", default=str(SHARED_TIRE), help="image folder or MVTec category")
    parser.add_argument(
        "--mixed-precision", default="auto", choices=["auto", "none", "bf16", "fp16"]
    )
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from bench.inference import _matmul_probe
    from ssad import batchnorm, layers
    from ssad.config import Config
    from ssad.data import train_dataset
    from ssad.losses import objective_for
    from ssad.model import build_autoencoder, count_flops
    from ssad.precision import POLICIES, resolve_precision

    cfg = Config.preset(args.preset)
    res = cfg.data.resolution
    images, source = bench_images(args.data, res, 16)
    precision = resolve_precision(args.mixed_precision)[0]
    compute = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    probe = _matmul_probe(compute)
    peak = max(probe() for _ in range(3))

    def seconds_per_step(dataset, precision=precision, prune=True, keras_bn=False) -> float:
        """Steady-state seconds per step of one ``fit`` on a fresh model (median step)."""
        keras.mixed_precision.set_global_policy(POLICIES[precision])
        layers.PRUNE_PADDING_TAPS = prune
        batchnorm.FUSE = not keras_bn
        model = build_autoencoder(cfg.model)
        loss = objective_for(1, cfg.train.weight, cfg.train.norm)
        model.compile(keras.optimizers.Adam(cfg.train.learning_rate), loss)
        times: list[float] = []
        clock = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: times.append(time.perf_counter())
        )
        steps = args.warmup + args.steps
        model.fit(
            dataset, epochs=1, steps_per_epoch=steps, callbacks=[clock], shuffle=False, verbose=0
        )
        seconds = float(np.median(np.diff(times[args.warmup - 1 :])))
        keras.mixed_precision.set_global_policy("float32")
        layers.PRUNE_PADDING_TAPS = True
        batchnorm.FUSE = True
        return seconds

    rows, weighted_real, weighted_cached = [], 0.0, 0.0
    total_fraction = sum(s.fraction for s in cfg.train.stages)
    for stage in cfg.train.stages:
        real = train_dataset(images, cfg, stage.crop, stage.batch_size, seed=1)
        cached = real.take(1).cache().repeat()
        t_real, t_cached = seconds_per_step(real), seconds_per_step(cached)
        peak = max(peak, probe())
        model = build_autoencoder(cfg.model)
        flops = 3 * count_flops(model, stage.crop, stage.crop)
        useful = 3 * count_flops(model, stage.crop, stage.crop, useful=True)
        images_per_s = stage.batch_size / t_real
        row = {
            "crop": stage.crop,
            "batch": stage.batch_size,
            "seconds_per_step": round(t_real, 5),
            "images_per_s": round(images_per_s, 2),
            "seconds_per_step_cached_batch": round(t_cached, 5),
            "overhead_ratio": round(t_real / t_cached, 3),
            "fraction_of_matmul_peak": round(flops * images_per_s / peak, 3),
            "useful_fraction_of_matmul_peak": round(useful * images_per_s / peak, 3),
            "all_taps_speedup": round(seconds_per_step(cached, prune=False) / t_cached, 3),
        }
        if precision != "none":
            row["float32_speedup"] = round(seconds_per_step(cached, "none") / t_cached, 3)
        keras_bn = seconds_per_step(cached, keras_bn=True)
        row["keras_batchnorm_speedup"] = round(keras_bn / t_cached, 3)
        keras_float32 = seconds_per_step(cached, "none", keras_bn=True)
        row["float32_keras_batchnorm_speedup"] = round(keras_float32 / t_cached, 3)
        rows.append(row)
        weighted_real += stage.fraction / total_fraction * t_real
        weighted_cached += stage.fraction / total_fraction * t_cached
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "section": "train",
        "preset": args.preset,
        "resolution": res,
        "mixed_precision": precision,
        "matmul_flops_per_s": round(peak),
        "device": gpus[0].name if gpus else "CPU",
        "images": source,
        "timed_steps": args.steps,
        "stages": rows,
        "pipeline_overhead_ratio": round(weighted_real / weighted_cached, 3),
    }
