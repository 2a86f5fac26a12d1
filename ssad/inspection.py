"""Is my data texture-like? The stationarity check of the paper's section 4.2 and Fig. 5.

The method is strongest when every pixel position has the same distribution of values
(Proposition 2): true for textures, false for centred objects. Following the paper, the
training images are resized to a square working resolution and cut into all sliding windows
of half that side; for every position inside the window, the mean and standard deviation of
the gray value are taken over all windows of all images. Two box sums of an integral image
give both maps exactly, with no loop over windows.

The score is ``1 - spread``, where ``spread`` is the larger peak-to-peak range of the two maps,
divided by the standard deviation of all gray values (0 when the score would be negative).
Measured: the demo textures score 0.95-0.97, the MVTec bottle and tire about 0.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssad.config import DataConfig
from ssad.data.geometry import describe, resolve_resize
from ssad.data.readers import Source, load_images, training_image_paths
from ssad.errors import BadImageError
from ssad.files import atomic_write_bytes
from ssad.images import image_size

TEXTURE_MIN_SCORE = 0.75  # from this score on, the data counts as texture-like


@dataclass(frozen=True)
class Stationarity:
    """Per-position statistics over sliding windows and the verdict drawn from them."""

    mean: np.ndarray  # [w, w] mean gray value at each window position (w = half the side)
    std: np.ndarray  # [w, w] standard deviation of the gray value there
    score: float  # 1: the same distribution everywhere; 0: strongly position-dependent
    n_images: int
    resolution: int

    @property
    def texture_like(self) -> bool:
        return self.score >= TEXTURE_MIN_SCORE

    @property
    def preset(self) -> str:
        """The preset this data wants: ``texture`` (rotations on) or ``object`` (off)."""
        return "texture" if self.texture_like else "object"

    @property
    def verdict(self) -> str:
        if self.texture_like:
            return (
                "texture-like: pixel statistics do not depend on position; "
                "use --preset texture (rotations and flips on)"
            )
        return (
            "object-like: pixel statistics depend on position; "
            "use --preset object (rotations and flips off); images are scored against "
            "per-pixel statistics of good images when all have one size (score.image_normalize)"
        )


def stationarity(images: np.ndarray) -> Stationarity:
    """Stationarity of square images ``[n, s, s]`` or ``[n, s, s, c]`` (uint8, or float in
    [0, 1]); colour channels are averaged to gray."""
    x = np.asarray(images)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float64) / scale
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"expected square images [n, s, s(, c)], got shape {images.shape}")
    n, side = x.shape[:2]
    window = side // 2
    reach = side - window + 1  # window offsets per axis: each position is averaged over these

    def window_average(total: np.ndarray) -> np.ndarray:
        integral = np.pad(total.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        r, w = reach, window
        box = integral[r : r + w, r : r + w] - integral[:w, r : r + w]
        box = box - integral[r : r + w, :w] + integral[:w, :w]
        return box / (n * reach * reach)

    mean = window_average(x.sum(axis=0))
    std = np.sqrt(np.maximum(window_average(np.square(x).sum(axis=0)) - np.square(mean), 0.0))
    spread = max(np.ptp(mean), np.ptp(std)) / max(float(x.std()), 1e-6)
    return Stationarity(
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        score=float(max(0.0, 1.0 - spread)),
        n_images=n,
        resolution=side,
    )


def data_stationarity(
    source: Source, resolution: int = 256, on_bad: str = "error"
) -> tuple[Stationarity, list]:
    """``(stationarity, skipped)`` of the training images of ``source`` (an MVTec category, a
    folder or a list of files) at ``resolution``; ``skipped``: the unreadable files
    (``BadImageError``, with ``on_bad="skip"``)."""
    images, skipped = load_images(training_image_paths(source), resolution, on_bad)
    return stationarity(images), skipped


def auto_preset(source: Source, on_bad: str = "error") -> tuple[str, str]:
    """``(preset, why)``: ``texture`` or ``object`` for the training images of ``source``, by
    their stationarity at 256 px (what ``ssad train --preset auto`` picks)."""
    result, _ = data_stationarity(source, 256, on_bad)
    return result.preset, (
        f"preset auto: {result.preset} (stationarity score {result.score:.2f}; "
        f"texture from {TEXTURE_MIN_SCORE})"
    )


def size_summary(source: Source, resolution: int = 256) -> str:
    """The sizes and aspects of the training images of ``source`` and the working geometry
    that ``data.resize=auto`` picks for them at ``resolution`` (unreadable files left out)."""
    sizes = []
    for path in training_image_paths(source):
        try:
            sizes.append(image_size(path))
        except BadImageError:
            continue
    if not sizes:
        return "sizes: no readable image"
    geometry = describe(resolve_resize(DataConfig(resolution=resolution), sizes))
    distinct = sorted(set(sizes))
    if len(distinct) == 1:
        h, w = distinct[0]
        return f"sizes: all {len(sizes)} images are {w}x{h}; data.resize=auto -> {geometry}"
    short = np.array([min(hw) for hw in sizes])
    aspect = np.array([w / h for h, w in sizes])
    return (
        f"sizes: {len(distinct)} different among {len(sizes)} images, shorter side "
        f"{short.min()}-{short.max()} px (median {np.median(short):g}), aspect w/h "
        f"{aspect.min():.2f}-{aspect.max():.2f}; data.resize=auto -> {geometry}"
    )


def plot_stationarity(result: Stationarity, path: str | os.PathLike, title: str = "") -> Path:
    """Save the mean and std maps (fixed scales, so flat means stationary) and their middle
    rows as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax_mean, ax_std, ax_row = fig.subplots(1, 3)
    for ax, values, name, top in (
        (ax_mean, result.mean, "mean", 1.0),
        (ax_std, result.std, "std", 0.5),
    ):
        shown = ax.imshow(values, vmin=0.0, vmax=top, cmap="viridis")
        ax.set_title(f"{name} of the gray value per position")
        ax.set_axis_off()
        fig.colorbar(shown, ax=ax, shrink=0.85)
    middle = result.mean.shape[0] // 2
    row_mean, row_std = result.mean[middle], result.std[middle]
    ax_row.plot(row_mean, label="mean")
    ax_row.fill_between(
        np.arange(len(row_mean)), row_mean - row_std, row_mean + row_std, alpha=0.3, label="± std"
    )
    ax_row.set_ylim(0.0, 1.0)
    ax_row.set_xlabel("position in the middle row of the window")
    ax_row.legend(loc="upper right")
    ax_row.set_title("middle row")
    fig.suptitle(
        f"{title}  score {result.score:.2f} ({result.preset}-like), "
        f"{result.n_images} images at {result.resolution} px, windows of {result.mean.shape[0]} px"
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
