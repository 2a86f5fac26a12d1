"""Export a run with the whole detector inside: a SavedModel for TF Serving, or an ONNX or
OpenVINO model for ONNX Runtime or OpenVINO on the factory floor.

``export(run_dir, export_base, format=...)`` writes ``export_base/N/`` (TF Serving's versioned
layout): ``saved_model.pb`` and ``variables/``, ``model.onnx``, or ``model.xml`` and
``model.bin`` (OpenVINO IR, float32 weights); ``assets.extra/`` keeps the
run's config and calibration. The graph holds everything ``Detector`` does: resizing to the
working geometry and back, padding to a multiple of 8, the autoencoder, the error maps,
smoothing, the good-image statistics, the image score, and the stored thresholds, so the
served model gives the same numbers as ``ssad predict`` with no client-side preprocessing.

The ONNX model is converted with ``tf2onnx``, the OpenVINO one with ``openvino.convert_model``,
both from ``serving_default`` (:func:`to_onnx`, :func:`to_openvino`). OpenVINO computes in
bfloat16 by default on CPUs that have it: compile with ``{"INFERENCE_PRECISION_HINT": "f32"}``
for ``Detector``'s numbers. Signatures (both return ``heatmap`` [b, h, w] float32, ``score``
[b] float32, ``mask`` [b, h, w] bool (heatmap >= pixel threshold), ``is_anomalous`` [b] bool
(score >= image threshold) and ``reconstruction`` [b, h, w, 3] float32 in [0, 1]):

- ``serving_default``: ``images`` float32 [b, h, w, 3] in [0, 1], any h and w;
- ``serving_bytes``: ``images_bytes`` string [b], encoded PNG, JPEG, BMP or GIF (first frame),
  decoded to RGB in the graph. All images of one request must have the same size (the
  batch is stacked); send differently sized images in separate requests.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import tensorflow as tf

from ssad.detection import Detector
from ssad.errors import SsadError
from ssad.files import atomic_dir
from ssad.run import RunDir
from ssad.scoring import anomaly_maps

SIGNATURES = ("serving_default", "serving_bytes")
FORMATS = ("saved_model", "onnx", "openvino")
# the model file of each format but the SavedModel, and the module that writes it
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
CONVERTERS = {"onnx": "tf2onnx", "openvino": "openvino"}
ONNX_OPSET = 17


class ServingModule(tf.Module):
    """A ``Detector`` as a ``tf.Module`` with constants baked in; its methods are named after
    the signatures (so ``keras.layers.TFSMLayer`` finds them as attributes too)."""

    def __init__(self, detector: Detector):
        super().__init__(name="ssad_detector")
        self.model = detector.model
        self.data = detector.config.data
        self.sigma = detector.sigma
        self.score = detector.config.score
        self.statistics = detector.statistics  # its arrays become constants of the graph
        self.pixel_threshold = detector.pixel_threshold
        self.image_threshold = detector.image_threshold

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, "images")],
        autograph=False,  # the graph's Python control flow is on static values only
    )
    def serving_default(self, images):
        heatmap, score, reconstruction = anomaly_maps(
            self.model, images, self.data, self.sigma, self.score, self.statistics
        )
        return {
            "heatmap": heatmap,
            "score": score,
            "mask": heatmap >= self.pixel_threshold,
            "is_anomalous": score >= self.image_threshold,
            "reconstruction": reconstruction,
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, "images_bytes")], autograph=False
    )
    def serving_bytes(self, images_bytes):
        decoded = tf.map_fn(
            _decode,
            images_bytes,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
        )
        return self.serving_default(decoded)


def _decode(data):
    return tf.io.decode_image(data, channels=3, dtype=tf.float32, expand_animations=False)


def next_version(export_base: str | os.PathLike) -> int:
    """One more than the highest numbered version folder in ``export_base`` (1 if none)."""
    base = Path(export_base)
    if not base.is_dir():
        return 1
    versions = [int(p.name) for p in base.iterdir() if re.fullmatch(r"\d+", p.name)]
    return max(versions, default=0) + 1


def export(
    run_dir: str | os.PathLike,
    export_base: str | os.PathLike,
    version: int | None = None,
    format: str = "saved_model",
) -> Path:
    """Write the run's detector in ``format`` (``saved_model``, ``onnx`` or ``openvino``) to
    ``export_base/version`` and return that path.

    ``version`` defaults to the next free number; an existing version folder is an error,
    never overwritten. The folder appears complete or not at all. ``onnx`` and ``openvino``
    need their extras: ``pip install 'ssad[onnx]'`` or ``'ssad[openvino]'``.
    """
    if format not in FORMATS:
        raise SsadError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format in CONVERTERS:
        require_extra(CONVERTERS[format], format)
    base = Path(export_base)
    if version is None:
        version = next_version(base)
    if version < 1:
        raise SsadError(f"export version must be a positive integer, got {version}")
    target = base / str(version)
    if target.exists():
        raise SsadError(
            f"{target}: version {version} already exists; pick another --version "
            "or leave it out to use the next free one"
        )
    run = RunDir(run_dir)
    detector = Detector.load(run.path)
    base.mkdir(parents=True, exist_ok=True)
    module = ServingModule(detector)
    signatures = {name: getattr(module, name) for name in SIGNATURES}
    with atomic_dir(target) as tmp:
        if format == "saved_model":
            tf.saved_model.save(module, str(tmp), signatures=signatures)
        elif format == "onnx":
            to_onnx(module.serving_default, tmp / MODEL_FILES[format])
        else:  # IR: model.xml and model.bin, weights kept in float32
            import openvino

            model = to_openvino(module.serving_default)
            openvino.save_model(model, str(tmp / MODEL_FILES[format]), compress_to_fp16=False)
        extra = tmp / "assets.extra"  # TF Serving ignores this folder; kept for provenance
        extra.mkdir()
        for path in run.provenance():
            shutil.copyfile(path, extra / path.name)
    return target


def require_extra(module: str, format: str) -> None:
    """A one-line ``SsadError`` naming the extra to install when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SsadError(f"the {format} format needs {module}: pip install 'ssad[{format}]'")


def to_onnx(function, path: str | os.PathLike) -> None:
    """``function`` (a ``tf.function`` of ``images`` float32 [b, h, w, 3], such as
    ``ServingModule.serving_default``) as an ONNX model at ``path`` (dynamic batch, height and
    width)."""
    import tf2onnx

    spec = [tf.TensorSpec([None, None, None, 3], tf.float32, "images")]
    tf2onnx.convert.from_function(
        function, input_signature=spec, opset=ONNX_OPSET, output_path=str(path)
    )


def to_openvino(function):
    """``function`` (as for :func:`to_onnx`) as an in-memory OpenVINO model."""
    import openvino

    return openvino.convert_model(function.get_concrete_function())
