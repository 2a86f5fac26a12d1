"""``python tools/benchmark.py pipeline``: training samples per second that ``train_dataset``
delivers at 256x256 (decoded images cached, after warm-up), with and without the elastic
distortion; the CPU time per sample (which, unlike the rate, does not depend on what else runs
on the machine); the distortion alone; and the rate with tf.data limited to 1 and 2 threads.

Images: the training images of ``--data`` (default: the shared tire set when present), else
generated noise images.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench import SHARED_TIRE, bench_images


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="benchmark.py pipeline")
    parser.add_argument("--data", default=str(SHARED_TIRE), help="image folder or MVTec category")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    args = parser.parse_args(argv)

    import tensorflow as tf

    import ssad

    cfg = ssad.Config.preset("texture").override({"data.resolution": args.resolution})
    res, bs = args.resolution, args.batch_size
    images, source = bench_images(args.data, res, 64)

    def rate(distort: bool, threads: int | None = None) -> tuple[float, float]:
        """(samples per second, CPU milliseconds per sample: robust to a shared machine)"""
        ds = ssad.data.train_dataset(images, cfg, res, bs, seed=1, distort=distort)
        if threads:
            options = tf.data.Options()
            options.threading.private_threadpool_size = threads
            ds = ds.with_options(options)
        it = iter(ds)
        for _ in range(10):  # warm-up: tracing, autotuning, filling the prefetch buffer
            next(it)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.batches):
            next(it)
        n = args.batches * bs
        return n / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / n

    batch = tf.constant(images[:bs].astype(np.float32) / 255.0)
    distort_fn = tf.function(lambda x, seed: ssad.data.distort(x, cfg.distortion, seed, res))
    distort_fn(batch, tf.constant([0, 0], tf.int64))
    start = time.perf_counter()
    for i in range(args.batches):
        distort_fn(batch, tf.constant([0, i], tf.int64))
    distort_s = (time.perf_counter() - start) / (args.batches * bs)

    without, cpu_without = rate(False)
    with_distortion, cpu_with = rate(True)
    return {
        "samples_per_s": round(with_distortion, 1),
        "samples_per_s_no_distortion": round(without, 1),
        "distortion_share_of_pipeline_time": round(1.0 - with_distortion / without, 3),
        "cpu_ms_per_sample": round(cpu_with, 2),
        "cpu_ms_per_sample_no_distortion": round(cpu_without, 2),
        "distortion_share_of_cpu_time": round(1.0 - cpu_without / cpu_with, 3),
        "distortion_only_samples_per_s": round(1.0 / distort_s, 1),
        "samples_per_s_1_thread": round(rate(True, threads=1)[0], 1),
        "samples_per_s_2_threads": round(rate(True, threads=2)[0], 1),
        "resolution": res,
        "batch_size": bs,
        "images": f"{len(images)} from {source}",
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
