"""Shared test fixtures that need no training: a fabricated run directory."""

from __future__ import annotations

import json
from pathlib import Path

import keras

from ssad.config import Config
from ssad.detection import save_heldout
from ssad.model import build_autoencoder


def make_run_dir(
    path,
    preset: str = "tiny",
    pixel_threshold: float = 0.01,
    image_threshold: float = 0.02,
    seed: int = 0,
    overrides: dict | None = None,
    heldout: list | None = None,
) -> Path:
    """An untrained ``preset`` model saved as a run directory: ``model.keras``, ``config.json``
    and ``calibration.json`` (method ``manual``) in the new or empty folder ``path``; with
    ``heldout`` (image files) also ``heldout.json``, so that the run can be rescored."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = Config.preset(preset).override(overrides or {})
    keras.utils.set_random_seed(seed)
    build_autoencoder(cfg.model).save(path / "model.keras")
    cfg.save(path / "config.json")
    calibration = {
        "pixel_threshold": pixel_threshold,
        "image_threshold": image_threshold,
        "method": "manual",
        "n_images": 0,
        "ssad_version": "test",
        "score": cfg.to_dict()["score"],  # the scoring these thresholds are for
    }
    (path / "calibration.json").write_text(json.dumps(calibration))
    if heldout is not None:
        save_heldout(path, heldout)
    return path
