"""Export a run with the whole detector inside: a SavedModel for TF Serving, or an ONNX or
OpenVINO model for ONNX Runtime or OpenVINO on the factory floor.

``export(run_dir, export_base, format=...)`` writes ``export_base/N/`` (TF Serving's versioned
layout): ``saved_model.pb`` and ``variables/``, ``model.onnx``, or ``model.xml`` and
``model.bin`` (OpenVINO IR, float32 weights, or with ``precision="bf16"`` the autoencoder in
bfloat16); ``assets.extra/`` keeps the
run's config and calibration. The graph holds everything ``Detector`` does: resizing to the
working geometry and back, padding to a multiple of 8, the autoencoder, the error maps,
smoothing, the good-image statistics, the image score, and the stored thresholds, so the
served model gives the same numbers as ``ssad predict`` with no client-side preprocessing.

The ONNX model is converted with ``tf2onnx``, the OpenVINO one with ``openvino.convert_model``,
both from ``serving_default`` (:func:`to_onnx`, :func:`to_openvino`). OpenVINO computes in
bfloat16 by default on CPUs that have it, which breaks the heatmaps: compile with
``{"INFERENCE_PRECISION_HINT": "f32"}`` (for a ``bf16`` export too: its autoencoder still
runs in bfloat16, the rest in float32). Signatures (both return ``heatmap`` [b, h, w]
float32, ``score`` [b] float32, ``mask`` [b, h, w] bool (heatmap >= pixel threshold),
``is_anomalous`` [b] bool (score >= image threshold) and ``reconstruction`` [b, h, w, 3]
float32 in [0, 1]):

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
PRECISIONS = ("f32", "bf16")  # bf16: the OpenVINO model's autoencoder in bfloat16
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
    precision: str = "f32",
) -> Path:
    """Write the run's detector in ``format`` (``saved_model``, ``onnx`` or ``openvino``) to
    ``export_base/version`` and return that path.

    ``precision``: ``bf16`` writes an OpenVINO model whose autoencoder computes in bfloat16
    (:func:`autoencoder_in_bf16`; the other formats are float32 only).

    ``version`` defaults to the next free number; an existing version folder is an error,
    never overwritten. The folder appears complete or not at all. ``onnx`` and ``openvino``
    need their extras: ``pip install 'ssad[onnx]'`` or ``'ssad[openvino]'``.
    """
    if format not in FORMATS:
        raise SsadError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise SsadError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "f32" and format != "openvino":
        raise SsadError(f"precision {precision} is for the openvino format; {format} is f32 only")
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

            model = to_openvino(module.serving_default, precision)
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


def to_openvino(function, precision: str = "f32"):
    """``function`` (as for :func:`to_onnx`) as an in-memory OpenVINO model; ``precision``
    ``bf16``: its autoencoder in bfloat16 (:func:`autoencoder_in_bf16`)."""
    import openvino

    model = openvino.convert_model(function.get_concrete_function())
    return autoencoder_in_bf16(model) if precision == "bf16" else model


def autoencoder_in_bf16(model):
    """The OpenVINO ``model`` with its autoencoder in bfloat16 and all else in float32.

    OpenVINO's own bfloat16 (``INFERENCE_PRECISION_HINT`` bf16) lowers the whole graph but its
    last few ops, and its rounding in the resizing, error maps and normalisation gave NaN and
    wrong heatmaps. Here only the autoencoder is lowered, in the graph itself: every op on a
    path between two of its convolutions (those with 3 or more input or output channels; the
    smoothing and gradient filters have 1 or 2) computes in bfloat16, with conversions at the
    edges, so that OpenVINO compiled with the float32 hint runs the convolutions in bfloat16
    on CPUs that have it; inside a tile loop's body too. Converting a model twice changes
    nothing.
    """
    import openvino
    import openvino.opset13 as ops

    nodes = model.get_ordered_ops()
    for node in nodes:  # a tile loop (images of any size): its body holds the autoencoder
        if node.get_type_name() == "Loop":
            node.set_function(autoencoder_in_bf16(node.get_function()))
    convs = [n for n in nodes if _is_autoencoder_conv(n)]
    region = _reachable(convs, forward=True) & _reachable(convs, forward=False)
    f32 = openvino.Type.f32
    for node in nodes:
        if node not in region:
            continue
        for port in node.inputs():
            source = port.get_source_output()
            if source.get_node() not in region and source.get_element_type() == f32:
                port.replace_source_output(ops.convert(source, "bf16").output(0))
        for output in node.outputs():
            outside = [t for t in output.get_target_inputs() if t.get_node() not in region]
            if outside and output.get_element_type() == f32:
                back = ops.convert(output, "f32").output(0)
                for target in outside:
                    target.replace_source_output(back)
    model.validate_nodes_and_infer_types()
    return model


def _is_autoencoder_conv(node) -> bool:
    if node.get_type_name() not in ("Convolution", "ConvolutionBackpropData"):
        return False
    shape = node.input(1).get_partial_shape()  # weights [out, in, kh, kw] (transposed: in, out)
    return shape.rank.is_static and max(shape[0].get_length(), shape[1].get_length()) >= 3


def _reachable(starts, forward: bool) -> set:
    """The nodes reachable from ``starts`` (included) along outputs or along inputs."""
    seen, stack = set(), list(starts)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if forward:
            stack += [t.get_node() for o in node.outputs() for t in o.get_target_inputs()]
        else:
            stack += [i.get_source_output().get_node() for i in node.inputs()]
    return seen
