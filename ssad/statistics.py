"""What a normal error looks like: statistics of the error maps of held-out good images.

The raw error of an autoencoder is not equally large everywhere on a good image: specular
highlights, edges of the part, a noisy background or a texture's mortar lines are always
reconstructed worse. ``GoodStatistics`` stores the mean and spread of each raw error map on
defect-free images and turns a map into ``(error - mean) / std``, so that "unusual for this
place" (or "for this kind of structure") is what the heatmap shows:

- ``pixel``: a mean and std map at the working resolution (aligned objects of one size);
- ``global``: one mean and std per map (only matters when several maps are combined);
- ``structure``: mean and std as a function of the local gradient energy of the input and
  its reconstruction (``ssad.scoring.structure_guide``): textures, where a position means
  nothing but edges are always harder than flat areas. Mean and std are fitted per quantile
  bin (16) of the guide on good images; a pixel's are interpolated linearly between the bins'
  centres on the quantile scale (linear between 17 stored quantiles). The normalisation is
  thus continuous in the guide, so a rounding difference between runtimes cannot move a pixel
  into another bin, and it also ranks defects better than the bins alone (see
  ``docs/scoring.md``);
- ``none``: the raw map.

A ``pixel`` or ``structure`` heatmap is mixed with the globally normalised map
(``score.global_mix``, ``GoodStatistics.overall``): how unusual an error is for its place or
structure, and how large it is among all good pixels. The image score may be normalised
otherwise than the heatmap (``score.image_normalize``) or taken from other error maps
(``score.image_map``): ``GoodStatistics.image`` then holds its statistics (mixed alike).
Per-pixel statistics rank whole images of an aligned object best, statistics by structure
give the better heatmap (``docs/scoring.md``).

Few images give noisy per-pixel spreads, and a quiet region (a dark background) has a tiny
one: the std is smoothed and floored at ``floor`` times its mean over all positions
(``score.std_floor``), so that such places do not turn sensor noise into anomalies.
``fit_statistics`` works in NumPy; ``GoodStatistics.apply`` in TensorFlow (the detection graph
and the export hold the arrays as constants).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy import ndimage

from ssad.errors import OutdatedStatisticsError, RunDirError

MODES = ("none", "global", "pixel", "structure")
STRUCTURE_BINS = 16  # quantile bins per guide channel


@dataclass(frozen=True, eq=False)
class GoodStatistics:
    """Mean and std of each of ``m`` raw error maps on good images.

    ``mean``/``std``: ``[m]`` (global, none), ``[h, w, m]`` (pixel) or ``[cells, m]``
    (structure, with ``quantiles`` ``[g, bins + 1]``: the increasing values of each of the
    ``g`` guide channels at quantile levels 0, 1/bins, ..., 1; cells are the row-major
    combinations of one bin per channel). ``image``: the statistics of the image score when
    it is normalised otherwise than the heatmap or from other maps (``None``: these).
    ``overall``: the global statistics of the same maps, which a ``pixel`` or ``structure``
    map is mixed with (``score.global_mix``; ``None``: not fitted).
    """

    mode: str
    mean: np.ndarray
    std: np.ndarray
    quantiles: np.ndarray
    image: GoodStatistics | None = None
    overall: GoodStatistics | None = None

    @property
    def for_image(self) -> GoodStatistics:
        """The statistics the image score is computed with."""
        return self.image or self

    def apply(self, maps: tf.Tensor, guide: tf.Tensor | None = None) -> tf.Tensor:
        """``(maps - mean) / std`` for raw maps ``[b, h, w, m]``; ``guide`` ``[b, h, w, g]``:
        the structure guide (``structure`` mode only)."""
        maps = tf.cast(maps, tf.float32)
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        if self.mode == "structure":
            guide = tf.cast(guide, tf.float32)
            flat = tf.reshape(guide, [-1, len(self.quantiles)])
            weights = None  # [pixels, cells]: the interpolation weights of each cell
            for channel, quantiles in enumerate(self.quantiles):
                hats = _hats(flat[:, channel], quantiles)
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
        """The working size ``(h, w)`` a ``pixel`` statistic (of the heatmap or of the image
        score) applies to (else ``None``)."""
        for stats in (self, self.for_image):
            if stats.mode == "pixel":
                return tuple(stats.mean.shape[:2])
        return None

    # -- storage ----------------------------------------------------------------------------------
    _FIELDS = ("mode", "mean", "std", "quantiles")

    _NESTED = ("image", "overall")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **self._arrays(""))
        return buffer.getvalue()

    def _arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays of these statistics and of the nested ones, under ``prefix``."""
        arrays = {prefix + key: np.asarray(getattr(self, key)) for key in self._FIELDS}
        for name in self._NESTED:
            if (nested := getattr(self, name)) is not None:
                arrays |= nested._arrays(f"{prefix}{name}_")
        return arrays

    @staticmethod
    def from_bytes(data: bytes, where: str = "statistics") -> GoodStatistics:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                return _read(f, "", where)
        except (OSError, EOFError, KeyError, ValueError) as e:
            raise RunDirError(f"{where}: unreadable good-image statistics ({e})") from None


def _read(f, prefix: str, where: str) -> GoodStatistics:
    """The statistics stored under ``prefix`` in the open ``.npz`` ``f``, with the nested
    ones."""
    mode = str(f[prefix + "mode"])
    if mode == "structure" and prefix + "quantiles" not in f.files:
        raise OutdatedStatisticsError(
            f"{where}: structure statistics of an earlier ssad (no quantiles); "
            "run `ssad calibrate RUN` to refit them"
        )
    quantiles = f[prefix + "quantiles"] if prefix + "quantiles" in f.files else np.zeros(0)
    stats = GoodStatistics(
        mode,
        f[prefix + "mean"].astype(np.float32),
        f[prefix + "std"].astype(np.float32),
        quantiles.astype(np.float32),
    )
    if stats.mode not in MODES or stats.mean.shape != stats.std.shape:
        raise RunDirError(f"{where}: unreadable good-image statistics (mode {stats.mode!r})")
    for name in GoodStatistics._NESTED:
        if f"{prefix}{name}_mode" in f.files:
            stats = dataclasses.replace(stats, **{name: _read(f, f"{prefix}{name}_", where)})
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
    quantiles = np.stack([_quantiles(guide[:, c]) for c in range(guide.shape[1])])
    quantiles = quantiles.astype(np.float32).astype(np.float64)  # as stored and applied
    index = np.zeros(len(guide), np.int64)  # each pixel's cell: its bin in every channel
    for g, q in zip(guide.T, quantiles, strict=True):
        level = _level(g, q)
        index = index * STRUCTURE_BINS + np.minimum(level.astype(np.int64), STRUCTURE_BINS - 1)
    cells = STRUCTURE_BINS ** guide.shape[1]
    count = np.bincount(index, minlength=cells)[:, None]
    total = np.stack([np.bincount(index, values[:, j], cells) for j in range(m)], axis=1)
    square = np.stack([np.bincount(index, values[:, j] ** 2, cells) for j in range(m)], axis=1)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(square / np.maximum(count, 1) - mean**2, 0.0))
    # a cell no good pixel fell into: the global statistics (what is unusual there is unknown)
    empty = count[:, 0] == 0
    mean[empty], std[empty] = values.mean(0), values.std(0)
    return GoodStatistics(
        mode, mean.astype(np.float32), _floor(std, floor), quantiles.astype(np.float32)
    )


def _quantiles(values: np.ndarray) -> np.ndarray:
    """The values at quantile levels ``0, 1/bins, ..., 1`` of one guide channel, each at least
    a relative 1e-6 above the one before (ties: a few float32 steps, almost a step)."""
    q = np.quantile(values, np.linspace(0, 1, STRUCTURE_BINS + 1))
    for k in range(1, len(q)):
        q[k] = max(q[k], q[k - 1] + max(1e-6 * abs(q[k - 1]), 1e-12))
    return q


def _level(values, quantiles: np.ndarray, clip=np.clip):
    """The quantile level of ``values`` times the number of bins, in ``[0, bins]``: linear
    between the stored ``quantiles``, clipped beyond them. A sum of clipped ramps, elementwise
    ops that every exporter converts (``clip``: NumPy's or TensorFlow's)."""
    level = 0.0
    for a, b in itertools.pairwise(quantiles.astype(np.float64)):
        level = level + clip((values - float(a)) * float(1 / max(b - a, 1e-12)), 0.0, 1.0)
    return level


def _hats(values: tf.Tensor, quantiles: np.ndarray) -> tf.Tensor:
    """Weights ``[n, bins]`` of ``values`` ``[n]``: linear interpolation between the bins'
    centres (level ``k + 1/2``; all weight on the outer bin beyond its centre); rows sum to 1."""
    bins = len(quantiles) - 1
    t = tf.clip_by_value(_level(values, quantiles, tf.clip_by_value) - 0.5, 0.0, bins - 1.0)
    return tf.stack([tf.nn.relu(1.0 - tf.abs(t - k)) for k in range(bins)], axis=-1)


def _floor(std: np.ndarray, floor: float) -> np.ndarray:
    """``std`` floored at ``floor`` times its mean over positions (per map)."""
    std = np.asarray(std, np.float64)
    level = std.reshape(-1, std.shape[-1]).mean(axis=0)
    return np.maximum(std, np.maximum(floor * level, 1e-12)).astype(np.float32)
