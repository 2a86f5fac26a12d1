"""``python tools/benchmark.py train``: training speed of each stage of a preset's schedule.

For every stage of ``--preset`` (crop side, batch size): seconds per ``model.fit`` step and
images per second with the real input pipeline (``ssad.data.train_dataset``: crops, flips,
distortion), after ``--warmup`` steps of tracing and autotuning; the same with one cached batch
repeated; and ``pipeline_overhead_ratio`` = step time with the pipeline / step time with the
cached batch (1.0: the pipeline keeps up), over the whole schedule with each stage weighted by
its share of the steps. Images: the training images of ``--data`` (default: the shared tire
set when present), else generated noise.
"""

from __future__ import annotations

import argparse
import time

from bench import SHARED_TIRE, bench_images


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="benchmark.py train")
    parser.add_argument("--preset", default="texture", help="preset whose stages are timed")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--data", default=str(SHARED_TIRE), help="image folder or MVTec category")
    parser.add_argument("--mixed-precision", default="none", choices=["none", "bf16", "fp16"])
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from ssad.config import Config
    from ssad.data import train_dataset
    from ssad.losses import objective_for
    from ssad.model import build_autoencoder
    from ssad.precision import POLICIES

    cfg = Config.preset(args.preset)
    res = cfg.data.resolution
    images, source = bench_images(args.data, res, 16)
    keras.mixed_precision.set_global_policy(POLICIES[args.mixed_precision])

    def seconds_per_step(dataset) -> float:
        """Steady-state seconds per step of one ``fit`` on a fresh model."""
        model = build_autoencoder(cfg.model)
        loss = objective_for(1, cfg.train.lam, cfg.train.norm)
        model.compile(keras.optimizers.Adam(cfg.train.learning_rate), loss)
        times: list[float] = []
        clock = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: times.append(time.perf_counter())
        )
        steps = args.warmup + args.steps
        model.fit(
            dataset, epochs=1, steps_per_epoch=steps, callbacks=[clock], shuffle=False, verbose=0
        )
        return (times[-1] - times[args.warmup - 1]) / args.steps

    rows, weighted_real, weighted_cached = [], 0.0, 0.0
    total_fraction = sum(s.fraction for s in cfg.train.stages)
    for stage in cfg.train.stages:
        real = train_dataset(images, cfg, stage.crop, stage.batch_size, seed=1)
        cached = real.take(1).cache().repeat()
        t_real, t_cached = seconds_per_step(real), seconds_per_step(cached)
        rows.append(
            {
                "crop": stage.crop,
                "batch": stage.batch_size,
                "seconds_per_step": round(t_real, 5),
                "images_per_s": round(stage.batch_size / t_real, 2),
                "seconds_per_step_cached_batch": round(t_cached, 5),
                "overhead_ratio": round(t_real / t_cached, 3),
            }
        )
        weighted_real += stage.fraction / total_fraction * t_real
        weighted_cached += stage.fraction / total_fraction * t_cached
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "section": "train",
        "preset": args.preset,
        "resolution": res,
        "mixed_precision": args.mixed_precision,
        "device": gpus[0].name if gpus else "CPU",
        "images": source,
        "timed_steps": args.steps,
        "stages": rows,
        "pipeline_overhead_ratio": round(weighted_real / weighted_cached, 3),
    }
