"""What a normal error looks like: statistics of the error maps of held-out good images.

The raw error of an autoencoder is not equally large everywhere on a good image: specular
highlights, edges of the part, a noisy background or a texture's mortar lines are always
reconstructed worse. ``GoodStatistics`` stores the mean and spread of each raw error map on
defect-free images and turns a map into ``(error - mean) / std``, so that "unusual for this
place" (or "for this kind of structure") is what the heatmap shows:

- ``pixel``: a mean and std map at the working resolution (aligned objects of one size);
- ``global``: one mean and std per map (only matters when several maps are combined);
- ``structure``: mean and std as a function of the input's local gradient energy
  (``ssad.scoring.structure_guide``): textures, where a position means nothing but edges are
  always harder than flat areas. They are stored at the centres of quantile bins of the guide
  and interpolated linearly in between (fitted with the same interpolation weights), so the
  normalisation is continuous in the guide: a rounding difference between runtimes cannot move
  a pixel into another bin;
- ``none``: the raw map.

Few images give noisy per-pixel spreads, and a quiet region (a dark background) has a tiny
one: the std is smoothed and floored at ``floor`` times its mean over all positions
(``score.std_floor``), so that such places do not turn sensor noise into anomalies.
``fit_statistics`` works in NumPy; ``GoodStatistics.apply`` in TensorFlow (the detection graph
and the export hold the arrays as constants).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy import ndimage

from ssad.errors import RunDirError

MODES = ("none", "global", "pixel", "structure")
STRUCTURE_BINS = 16  # quantile bins per guide channel


@dataclass(frozen=True, eq=False)
class GoodStatistics:
    """Mean and std of each of ``m`` raw error maps on good images.

    ``mean``/``std``: ``[m]`` (global, none), ``[h, w, m]`` (pixel) or ``[cells, m]``
    (structure, with ``centers`` ``[g, bins]``: the increasing bin centres of each of the ``g``
    guide channels; cells are the row-major combinations of one centre per channel).
    """

    mode: str
    mean: np.ndarray
    std: np.ndarray
    centers: np.ndarray

    def apply(self, maps: tf.Tensor, guide: tf.Tensor | None = None) -> tf.Tensor:
        """``(maps - mean) / std`` for raw maps ``[b, h, w, m]``; ``guide`` ``[b, h, w, g]``:
        the structure guide (``structure`` mode only)."""
        maps = tf.cast(maps, tf.float32)
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        if self.mode == "structure":
            guide = tf.cast(guide, tf.float32)
            flat = tf.reshape(guide, [-1, len(self.centers)])
            weights = None  # [pixels, cells]: the interpolation weights of each cell
            for channel, centers in enumerate(self.centers):
                hats = _hats(flat[:, channel], centers)
                weights = hats if weights is None else tf.reshape(
                    weights[:, :, None] * hats[:, None, :], [tf.shape(flat)[0], -1]
                )  # fmt: skip
            shape = tf.concat([tf.shape(guide)[:-1], [self.mean.shape[-1]]], axis=0)
            mean = tf.reshape(tf.matmul(weights, mean), shape)
            std = tf.reshape(tf.matmul(weights, std), shape)
        elif self.mode == "pixel":
            maps = tf.ensure_shape(maps, [None, *self.mean.shape])
        return (maps - mean) / std

    @property
    def shape(self) -> tuple[int, int] | None:
        """The working size ``(h, w)`` a ``pixel`` statistic applies to (else ``None``)."""
        return tuple(self.mean.shape[:2]) if self.mode == "pixel" else None

    # -- storage ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer, mode=np.array(self.mode), mean=self.mean, std=self.std, centers=self.centers
        )
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes, where: str = "statistics") -> GoodStatistics:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                if "edges" in f.files:  # hard bins, written by an earlier ssad
                    raise RunDirError(
                        f"{where}: good-image statistics of an earlier ssad; "
                        "run `ssad calibrate RUN` to refit them"
                    )
                stats = GoodStatistics(
                    str(f["mode"]),
                    f["mean"].astype(np.float32),
                    f["std"].astype(np.float32),
                    f["centers"].astype(np.float32),
                )
        except (OSError, EOFError, KeyError, ValueError) as e:
            raise RunDirError(f"{where}: unreadable good-image statistics ({e})") from None
        if stats.mode not in MODES or stats.mean.shape != stats.std.shape:
            raise RunDirError(f"{where}: unreadable good-image statistics (mode {stats.mode!r})")
        return stats


def fit_statistics(
    mode: str,
    maps: list[np.ndarray],
    guides: list[np.ndarray] | None = None,
    sigma: float = 0,
    floor: float = 0.1,
) -> GoodStatistics:
    """Statistics of raw maps ``[h, w, m]`` of good images (any sizes but for ``pixel``).

    ``guides``: the structure guide ``[h, w]`` of each image (``structure`` only); ``sigma``:
    smoothing of the ``pixel`` mean and std maps, in pixels; ``floor``: the smallest std, as
    a fraction of the mean std over all positions (or bins).
    """
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}")
    if not maps:
        raise ValueError("good-image statistics need at least one image")
    m = maps[0].shape[-1]
    empty = np.zeros(0, np.float32)
    if mode == "none":
        return GoodStatistics(mode, np.zeros(m, np.float32), np.ones(m, np.float32), empty)
    if mode == "pixel":
        if len({x.shape for x in maps}) > 1:
            raise ValueError("pixel statistics need images of one size")
        stack = np.stack(maps).astype(np.float64)
        mean, std = stack.mean(axis=0), stack.std(axis=0)
        if sigma > 0:
            mean = ndimage.gaussian_filter(mean, (sigma, sigma, 0), mode="nearest")
            std = ndimage.gaussian_filter(std, (sigma, sigma, 0), mode="nearest")
        return GoodStatistics(mode, mean.astype(np.float32), _floor(std, floor), empty)
    values = np.concatenate([x.reshape(-1, m) for x in maps]).astype(np.float64)
    if mode == "global":
        return GoodStatistics(
            mode, values.mean(0).astype(np.float32), _floor(values.std(0), floor), empty
        )
    if guides is None:
        raise ValueError("structure statistics need the structure guides")
    guide = np.concatenate([g.reshape(-1, g.shape[-1]) for g in guides]).astype(np.float64)
    centers = np.stack([_bin_centers(guide[:, c]) for c in range(guide.shape[1])])
    centers = centers.astype(np.float32).astype(np.float64)  # as stored and applied
    cells = STRUCTURE_BINS ** guide.shape[1]
    # each pixel counts for the (up to 2**g) cells around it with the weights apply() uses
    low, frac = zip(
        *(_lower_center(g, c) for g, c in zip(guide.T, centers, strict=True)), strict=True
    )
    count, total, square = np.zeros(cells), np.zeros((cells, m)), np.zeros((cells, m))
    for corner in itertools.product((0, 1), repeat=len(centers)):
        index, weight = np.zeros(len(guide), np.int64), np.ones(len(guide))
        for c, bit in enumerate(corner):
            index = index * STRUCTURE_BINS + low[c] + bit
            weight = weight * (frac[c] if bit else 1 - frac[c])
        count += np.bincount(index, weight, cells)
        for j in range(m):
            total[:, j] += np.bincount(index, weight * values[:, j], cells)
            square[:, j] += np.bincount(index, weight * values[:, j] ** 2, cells)
    count = count[:, None]
    mean = total / np.maximum(count, 1e-12)
    std = np.sqrt(np.maximum(square / np.maximum(count, 1e-12) - mean**2, 0.0))
    # a cell no good pixel weighs on: the global statistics (what is unusual there is unknown)
    empty = count[:, 0] < 1e-6
    mean[empty], std[empty] = values.mean(0), values.std(0)
    return GoodStatistics(
        mode, mean.astype(np.float32), _floor(std, floor), centers.astype(np.float32)
    )


def _bin_centers(values: np.ndarray) -> np.ndarray:
    """``STRUCTURE_BINS`` increasing centres of one guide channel: the mean value in each of
    its quantile bins (an empty bin, where values tie: the middle of its edges), each at least
    a relative 1e-6 above the one before, so that interpolation never divides by zero."""
    edges = np.quantile(values, np.linspace(0, 1, STRUCTURE_BINS + 1))
    bins = np.clip(np.searchsorted(edges[1:-1], values, side="right"), 0, STRUCTURE_BINS - 1)
    count = np.bincount(bins, minlength=STRUCTURE_BINS)
    centers = np.bincount(bins, values, STRUCTURE_BINS) / np.maximum(count, 1)
    centers = np.where(count > 0, centers, (edges[:-1] + edges[1:]) / 2)
    for k in range(1, STRUCTURE_BINS):  # (a few float32 steps: ties stay almost a step)
        centers[k] = max(centers[k], centers[k - 1] + max(1e-6 * abs(centers[k - 1]), 1e-12))
    return centers


def _lower_center(values: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(k, t)``: each value lies a fraction ``t`` of the way from centre ``k`` to ``k + 1``
    (clipped to [0, 1] beyond the outer centres), as ``_hats`` weighs it."""
    k = np.clip(np.searchsorted(centers, values, side="right") - 1, 0, len(centers) - 2)
    width = np.maximum(centers[k + 1] - centers[k], 1e-12)
    t = np.clip((values - centers[k]) / width, 0.0, 1.0)
    return k, t


def _hats(values: tf.Tensor, centers: np.ndarray) -> tf.Tensor:
    """Linear interpolation weights ``[n, bins]`` of ``values`` ``[n]`` between ``centers``
    (each row sums to 1; beyond the outer centres all weight is on that centre): differences of
    clipped ramps, elementwise ops that every exporter converts."""
    ramps = [
        tf.clip_by_value((values - float(a)) * float(1 / max(b - a, 1e-12)), 0.0, 1.0)
        for a, b in itertools.pairwise(centers.astype(np.float64))
    ]
    hats = [1.0 - ramps[0]]
    hats += [ramps[k - 1] - ramps[k] for k in range(1, len(ramps))]
    return tf.stack([*hats, ramps[-1]], axis=-1)


def _floor(std: np.ndarray, floor: float) -> np.ndarray:
    """``std`` floored at ``floor`` times its mean over positions (per map)."""
    std = np.asarray(std, np.float64)
    level = std.reshape(-1, std.shape[-1]).mean(axis=0)
    return np.maximum(std, np.maximum(floor * level, 1e-12)).astype(np.float32)
