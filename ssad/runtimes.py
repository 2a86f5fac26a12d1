"""Exported detectors (``ssad export --format onnx|openvino``) as detectors.

``ExportedDetector(path)`` runs an exported graph with ONNX Runtime or OpenVINO, so that
``ssad predict EXPORT ...`` and ``Detector.load(EXPORT)`` check an export with the tools one
already knows; its config and thresholds come from the export's ``assets.extra/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssad.detection import BaseDetector
from ssad.errors import RunDirError, SsadError
from ssad.export import MODEL_FILES, PRECISIONS, require_extra
from ssad.run import RunDir


def model_file(path: str | os.PathLike) -> Path | None:
    """The ONNX or OpenVINO model file that ``path`` (the file, or its export folder) names;
    ``None`` for anything else."""
    path = Path(path)
    suffixes = {Path(name).suffix for name in MODEL_FILES.values()}
    if path.is_file():
        return path if path.suffix in suffixes else None
    for name in MODEL_FILES.values():
        if (path / name).is_file():
            return path / name
    return None


class ExportedDetector(BaseDetector):
    """An exported detector: ``path`` is ``model.onnx`` or ``model.xml`` or their export
    folder ``BASE/N``. ``precision`` (OpenVINO only): ``f32`` runs the model as exported
    (float32: the numbers of ``Detector``), ``bf16`` with its autoencoder in bfloat16, as
    ``ssad export --precision bf16`` writes it (faster on CPUs with AMX or AVX512-BF16).
    OpenVINO is always compiled with the float32 hint: its own bfloat16 mode breaks the
    heatmaps (``docs/serving.md``)."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 8, precision: str = "f32"):
        model = model_file(path)
        if model is None:
            raise RunDirError(f"{path}: no model.onnx or model.xml (an ssad export) there")
        if precision not in PRECISIONS:
            raise SsadError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        provenance = RunDir(model.parent / "assets.extra")
        self.config = provenance.read_config()
        self.calibration = provenance.read_calibration()
        self.batch_size = batch_size
        self.path = model
        if model.suffix == ".onnx":
            if precision != "f32":
                raise SsadError("an ONNX export runs in float32 (bf16 is OpenVINO's)")
            self._run = _onnx_runner(model)
        else:
            self._run = _openvino_runner(model, precision)

    def batch_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._run(np.ascontiguousarray(batch, np.float32))
        return np.asarray(out["heatmap"]), np.asarray(out["score"])


def _onnx_runner(model: Path):
    require_extra("onnxruntime", "onnx")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(None, {"images": x}), strict=True))


def _openvino_runner(model: Path, precision: str):
    require_extra("openvino", "openvino")
    import openvino

    from ssad.export import autoencoder_in_bf16

    core = openvino.Core()
    network = core.read_model(str(model))
    if precision == "bf16":
        network = autoencoder_in_bf16(network)
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    # copies: the request reuses its output buffers
    return lambda x: {
        o.get_any_name(): np.array(v) for o, v in request.infer({"images": x}).items()
    }
