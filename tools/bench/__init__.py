"""Benchmark sections for ``tools/benchmark.py``; what several of them share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED_TIRE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec3d_tire"


def bench_images(data: str, resolution: int, n_noise: int) -> tuple[np.ndarray, str]:
    """Training images of ``data`` (a folder or MVTec category) at ``resolution`` as uint8, or
    ``n_noise`` images of uniform noise when ``data`` is not a folder; and where they came from."""
    from ssad.data.readers import load_images, training_image_paths

    if Path(data).is_dir():
        images, _ = load_images(training_image_paths(data), resolution)
        return images, str(Path(data).resolve())
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n_noise, resolution, resolution, 3), np.uint8), "generated noise"
