"""Exported ONNX detectors (``ssad export --format onnx``) as detectors.

``ExportedDetector(path)`` runs the exported graph with ONNX Runtime, so that
``ssad predict EXPORT ...`` and ``Detector.load(EXPORT)`` check an export with the tools one
already knows; its config and thresholds come from the export's ``assets.extra/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssad.detection import BaseDetector
from ssad.errors import RunDirError
from ssad.export import MODEL_FILES, require_extra
from ssad.run import RunDir


def model_file(path: str | os.PathLike) -> Path | None:
    """The ONNX model file that ``path`` (the file, or its export folder) names; ``None`` for
    anything else."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".onnx" else None
    for name in MODEL_FILES.values():
        if (path / name).is_file():
            return path / name
    return None


class ExportedDetector(BaseDetector):
    """An exported ONNX detector (``model.onnx``); ``path``: the model file or its export
    folder ``BASE/N``."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 8):
        model = model_file(path)
        if model is None:
            raise RunDirError(f"{path}: no model.onnx (an ssad export) there")
        provenance = RunDir(model.parent / "assets.extra")
        self.config = provenance.read_config()
        self.calibration = provenance.read_calibration()
        self.batch_size = batch_size
        self.path = model
        require_extra("onnxruntime", "onnx")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        self._run = lambda x: dict(zip(names, session.run(None, {"images": x}), strict=True))

    def batch_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._run(np.ascontiguousarray(batch, np.float32))
        return np.asarray(out["heatmap"]), np.asarray(out["score"])
