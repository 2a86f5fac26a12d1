"""Shared test fixtures that need no training: a fabricated run directory."""

from __future__ import annotations

from pathlib import Path

from ssad.config import Config
from ssad.run import untrained_run


def make_run_dir(
    path,
    preset: str = "tiny",
    pixel_threshold: float = 0.01,
    image_threshold: float = 0.02,
    seed: int = 0,
    overrides: dict | None = None,
    heldout: list | None = None,
) -> Path:
    """An untrained ``preset`` model saved as a run directory with manual thresholds (see
    ``ssad.run.untrained_run``); with ``heldout`` (image files) it can be rescored."""
    cfg = Config.preset(preset).override(overrides or {})
    return untrained_run(path, cfg, pixel_threshold, image_threshold, heldout, seed).path
