"""Inference speed against the machine's matmul peak.

``python tools/benchmark.py inference [--quick] [--repeats N] [--presets paper,demo]
[--sizes 256,512] [--batches 1,8] [--dtypes float32,bfloat16] [--runtimes tf,onnx,openvino]
[--run RUN_DIR ...]``

Times ``ssad.scoring.anomaly_maps`` in a ``tf.function`` (what ``Detector`` and the export
run: resize, pad, autoencoder, heatmap, smoothing, score) on random images, for each preset,
square size, batch and compute dtype; with ``--runtimes`` also the same graph converted as
``ssad export`` converts it, run by ONNX Runtime (float32) and OpenVINO (each of
``--dtypes``: bfloat16 as ``ssad export --precision bf16`` writes it, the autoencoder in
bfloat16; compiled with the float32 hint). The same run measures
``tf.matmul`` of two 4096x4096
matrices in each dtype (twice at the start and once before each row; the best is the peak),
and reports

- ``images_per_s`` (best of ``repeats`` timed calls after one warm-up call);
- ``fraction_of_matmul_peak`` = model FLOP per image (``ssad.model.count_flops``) x
  images/s / matmul FLOP/s of the row's dtype, and ``useful_fraction_of_matmul_peak`` with
  only the products that meet data (``count_flops(useful=True)``);
- ``keras_images_per_s`` (float32 rows): the stock Keras forward ``model(x)`` alone, for
  comparison with the inference graph;
- ``speedup_vs_tf_float32`` and ``max_abs_heatmap_diff_vs_tf_float32`` (every row but
  TensorFlow's float32 one).

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
    import numpy as np
    import tensorflow as tf

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(tf.nest.flatten(fn(x))[0])
        times.append(time.perf_counter() - start)
    return min(times)


def _converted(runtime: str, graph, dtypes: list[str]) -> dict:
    """``{(runtime, dtype): run}``: ``graph`` (a ``tf.function`` of ``images``) converted by
    the functions ``ssad export`` uses, each ``run`` taking and giving NumPy arrays."""
    import tempfile

    import numpy as np

    if runtime == "onnx":
        import onnxruntime

        from ssad.export import to_onnx

        with tempfile.TemporaryDirectory() as tmp:
            to_onnx(graph, f"{tmp}/model.onnx")
            session = onnxruntime.InferenceSession(
                f"{tmp}/model.onnx", providers=["CPUExecutionProvider"]
            )
        first = session.get_outputs()[0].name
        return {("onnx", "float32"): lambda x: session.run([first], {"images": x})[0]}
    if runtime == "openvino":
        import openvino

        from ssad.export import autoencoder_in_bf16, to_openvino

        converted, core, runs = to_openvino(graph), openvino.Core(), {}
        for dtype in dtypes:  # converted once; bfloat16 lowers a copy, as the export would
            model = converted if dtype == "float32" else autoencoder_in_bf16(converted.clone())
            request = core.compile_model(
                model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
            ).create_infer_request()
            runs["openvino", dtype] = lambda x, r=request: np.array(r.infer({"images": x})[0])
        return runs
    raise SystemExit(f"unknown runtime {runtime!r}: tf, onnx or openvino")


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
    p.add_argument("--runtimes", default="tf", help="comma-separated: tf, onnx, openvino")
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
    runtimes = args.runtimes.split(",")
    rows = []
    for preset, model, cfg in models:
        keras_forward = tf.function(lambda x, m=model: m(x, training=False))
        for size in (int(s) for s in args.sizes.split(",")):
            flops = count_flops(model, size, size)
            useful = count_flops(model, size, size, useful=True)
            sigma = cfg.score.sigma * size / 256
            square = DataConfig(resolution=size, resize="square")
            graphs = {
                dtype: tf.function(
                    partial(anomaly_maps, model, data=square, sigma=sigma, dtype=dtype),
                    input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, "images")],
                    autograph=False,
                )
                for dtype in dtypes
            }
            runners = {}  # (runtime, dtype) -> numpy images -> numpy heatmaps
            for dtype in dtypes:
                runners["tf", dtype] = lambda x, g=graphs[dtype]: g(x)[0].numpy()
            for runtime in runtimes:  # (TensorFlow's rows always: float32 is the reference)
                if runtime != "tf":
                    runners.update(_converted(runtime, graphs["float32"], dtypes))
            for batch in (int(b) for b in args.batches.split(",")):
                images = tf.random.stateless_uniform((batch, size, size, 3), seed=(size, batch))
                images = images.numpy()
                reference = None
                for (runtime, dtype), run in runners.items():
                    # The peak is the best matmul seen in the run, probed again before each
                    # row, so that a busy moment does not inflate the fractions.
                    peaks[dtype] = max(peaks[dtype], probes[dtype]())
                    heatmap = run(images)  # also traces or compiles
                    seconds = _best_seconds(run, images, args.repeats)
                    row = {
                        "preset": preset,
                        "size": size,
                        "batch": batch,
                        "runtime": runtime,
                        "dtype": dtype,
                        "images_per_s": batch / seconds,
                        "flop_per_image": flops,
                        "useful_flop_per_image": useful,
                    }
                    note = ""
                    if reference is None:  # TensorFlow float32: the reference
                        reference = (heatmap, row["images_per_s"])
                        x = tf.constant(images)
                        keras_forward(x)
                        k = _best_seconds(keras_forward, x, args.repeats)
                        row["keras_images_per_s"] = batch / k
                        note = f", stock Keras forward {batch / k:.3f} img/s"
                    else:
                        diff = float(np.abs(heatmap - reference[0]).max())
                        row["max_abs_heatmap_diff_vs_tf_float32"] = diff
                        row["speedup_vs_tf_float32"] = row["images_per_s"] / reference[1]
                        note = f", {row['speedup_vs_tf_float32']:.2f}x TF float32, diff {diff:.1e}"
                    rows.append(row)
                    fraction = flops * row["images_per_s"] / peaks[dtype]
                    _log(
                        f"{preset} {size}px batch {batch} {runtime} {dtype}: "
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
