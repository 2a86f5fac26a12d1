"""MVTec AD metrics: image AUROC, pixel AUROC, AUPRO up to FPR 0.3 and F1.

Image-level metrics are exact (one score per image). Pixel-level metrics stream over images in
fixed memory: ``PixelMetrics`` adds each heatmap to histograms of ``N_BINS`` bins spaced
logarithmically in magnitude over [1e-12, 1e6] on either side of zero (heatmaps are squared
errors, or such errors normalised by good-image statistics, which can be negative; magnitudes
below 1e-12 share the bins next to zero, larger ones than 1e6 the outermost bins). A bin is
0.03 % wide relative to its value, so the binned AUROC is within about 1e-4 of the exact one;
the histograms take 6 MB whatever the number of images.

Every curve is built the same way: thresholds are the lower edges of buckets (the distinct
scores for exact metrics, the bins for histograms), a pixel or image counts as positive when
its value is >= the threshold, and the curve starts at (0, 0) and ends at (1, 1).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_HALF = 1 << 17  # bins per sign
N_BINS = 2 * _HALF
LOG10_RANGE = (-12.0, 6.0)
_STEP = (LOG10_RANGE[1] - LOG10_RANGE[0]) / _HALF
_MAGNITUDE_LOWER = 10.0 ** (LOG10_RANGE[0] + _STEP * np.arange(_HALF))
_MAGNITUDE_LOWER[0] = 0.0
_MAGNITUDE_UPPER = 10.0 ** (LOG10_RANGE[0] + _STEP * np.arange(1, _HALF + 1))
# Bins ascend in value: the negative half mirrors the positive one.
BIN_EDGES = np.concatenate([-_MAGNITUDE_UPPER[::-1], _MAGNITUDE_LOWER])  # lower edge of each bin
_UPPER_EDGES = np.concatenate([-_MAGNITUDE_LOWER[::-1], _MAGNITUDE_UPPER])
PRO_MAX_FPR = 0.3
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def bin_index(values: np.ndarray) -> np.ndarray:
    """The histogram bin of each (finite) value."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite (got NaN or infinity)")
    logs = np.log10(np.maximum(np.abs(values), 10.0 ** LOG10_RANGE[0]))
    magnitude = np.clip(((logs - LOG10_RANGE[0]) / _STEP).astype(np.int64), 0, _HALF - 1)
    return np.where(values >= 0, _HALF + magnitude, _HALF - 1 - magnitude)


def histogram(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts (or summed ``weights``) of ``values`` in the ``N_BINS`` log-spaced bins."""
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return np.bincount(bin_index(values), weights=w, minlength=N_BINS).astype(np.float64)


def histogram_quantile(counts: np.ndarray, q: float) -> float:
    """A threshold with at most a fraction ``1 - q`` of the histogram's values at or above it
    (the upper edge of the bin holding the ``q`` quantile)."""
    cumulative = np.cumsum(counts)
    if cumulative[-1] <= 0:
        raise ValueError("histogram_quantile of an empty histogram")
    k = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(_UPPER_EDGES[min(k, N_BINS - 1)])


# -- curves from per-bucket counts --------------------------------------------------------------


def _rates(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at each bucket's threshold, from the highest
    threshold down, with (0, 0) first; buckets in ascending order of threshold."""
    tp = np.concatenate([[0.0], np.cumsum(positives[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(negatives[::-1])])
    return fp / max(fp[-1], 1e-300), tp / max(tp[-1], 1e-300)


def _area(x: np.ndarray, y: np.ndarray, x_max: float = 1.0) -> float:
    """Trapezoid area under the non-decreasing-x curve (x, y) from 0 to ``x_max``,
    interpolating the point at ``x_max``; divided by ``x_max``."""
    i = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:i], y[:i]
    if i < len(x):  # x[i - 1] <= x_max < x[i]
        t = (x_max - x[i - 1]) / (x[i] - x[i - 1])
        xs = np.append(xs, x_max)
        ys = np.append(ys, y[i - 1] + t * (y[i] - y[i - 1]))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0) / x_max)


def _best_f1(positives, negatives, thresholds) -> tuple[float, float]:
    """(best F1, its threshold) over the buckets' thresholds."""
    tp = np.cumsum(positives[::-1])[::-1]
    fp = np.cumsum(negatives[::-1])[::-1]
    f1 = 2 * tp / np.maximum(tp + fp + tp[0], 1e-300)  # tp[0]: all positives (= tp + fn)
    k = int(np.argmax(f1))
    return float(f1[k]), float(thresholds[k])


def _buckets(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct scores ascending, positives per score, negatives per score)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    values, inverse = np.unique(scores, return_inverse=True)
    pos = np.bincount(inverse, weights=labels, minlength=len(values))
    neg = np.bincount(inverse, weights=~labels, minlength=len(values))
    return values, pos, neg


def _both_classes(labels) -> bool:
    labels = np.asarray(labels, dtype=bool)
    return bool(labels.any() and not labels.all())


# -- exact metrics (image level) ----------------------------------------------------------------


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC ``(fpr, tpr)`` of binary ``labels`` against ``scores``."""
    _, pos, neg = _buckets(labels, scores)
    return _rates(pos, neg)


def auroc(labels, scores) -> float | None:
    """Exact area under the ROC curve; ``None`` unless both classes occur."""
    if not _both_classes(labels):
        return None
    return _area(*roc_curve(labels, scores))


def f1_score(labels, predictions) -> float | None:
    """F1 of boolean ``predictions``; ``None`` when there are no positives at all."""
    labels = np.asarray(labels, dtype=bool).ravel()
    predictions = np.asarray(predictions, dtype=bool).ravel()
    return f1_from_counts(
        np.sum(labels & predictions), np.sum(~labels & predictions), np.sum(labels & ~predictions)
    )


def f1_from_counts(tp, fp, fn) -> float | None:
    """2 TP / (2 TP + FP + FN); ``None`` when there is nothing to find and nothing found."""
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else None


def best_f1_threshold(labels, scores) -> tuple[float, float]:
    """``(F1, threshold)`` maximising F1 of ``scores >= threshold`` (a score from ``scores``)."""
    if not np.asarray(labels, dtype=bool).any():
        raise ValueError("best_f1_threshold needs at least one positive label")
    values, pos, neg = _buckets(labels, scores)
    return _best_f1(pos, neg, values)


# -- streaming metrics (pixel level) -------------------------------------------------------------


class PixelMetrics:
    """Pixel AUROC, AUPRO and F1 accumulated image by image in fixed memory.

    ``update(heatmap, mask)`` adds one image (``mask`` ``None``: defect-free); ``a + b`` pools
    two accumulators (e.g. the good images and one defect type). ``threshold``: the pixel
    threshold whose exact F1 is counted.
    """

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold
        self.positives = np.zeros(N_BINS)  # defect pixels per bin
        self.negatives = np.zeros(N_BINS)  # defect-free pixels per bin
        self.overlap = np.zeros(N_BINS)  # per defect pixel: 1 / size of its region
        self.regions = 0
        self.counts = np.zeros(3, dtype=np.int64)  # TP, FP, FN at ``threshold``

    def update(self, heatmap: np.ndarray, mask: np.ndarray | None) -> None:
        heatmap = np.asarray(heatmap)
        mask = np.zeros(heatmap.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != heatmap.shape:
            raise ValueError(f"mask shape {mask.shape} differs from heatmap {heatmap.shape}")
        bins = bin_index(heatmap)
        flat = mask.ravel()
        self.positives += np.bincount(bins[flat], minlength=N_BINS)
        self.negatives += np.bincount(bins[~flat], minlength=N_BINS)
        regions, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        if n:
            labels = regions.ravel()[flat]
            weights = 1.0 / np.bincount(labels)[labels]
            self.overlap += np.bincount(bins[flat], weights=weights, minlength=N_BINS)
            self.regions += n
        if self.threshold is not None:
            found = heatmap >= self.threshold
            self.counts += [np.sum(found & mask), np.sum(found & ~mask), np.sum(~found & mask)]

    def __add__(self, other: PixelMetrics) -> PixelMetrics:
        total = PixelMetrics(self.threshold)
        for name in ("positives", "negatives", "overlap", "regions", "counts"):
            setattr(total, name, getattr(self, name) + getattr(other, name))
        return total

    @property
    def has_defects(self) -> bool:
        return self.regions > 0

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """ROC ``(fpr, tpr)`` of all pixels pooled, at the bin edges."""
        return _rates(self.positives, self.negatives)

    def auroc(self) -> float | None:
        """Pixel AUROC; ``None`` without both defect and defect-free pixels."""
        if not (self.positives.any() and self.negatives.any()):
            return None
        return _area(*self.roc_curve())

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, pro)``: mean overlap of the ground-truth regions against the pixel FPR."""
        fpr, _ = _rates(self.positives, self.negatives)
        pro = np.concatenate([[0.0], np.cumsum(self.overlap[::-1])]) / max(self.regions, 1)
        return fpr, np.minimum(pro, 1.0)

    def aupro(self, max_fpr: float = PRO_MAX_FPR) -> float | None:
        """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr``."""
        if not (self.regions and self.negatives.any()):
            return None
        return _area(*self.pro_curve(), x_max=max_fpr)

    def f1(self) -> float | None:
        """Exact pixel F1 at ``threshold``."""
        return None if self.threshold is None else f1_from_counts(*self.counts)

    def best_f1_threshold(self) -> tuple[float, float]:
        """``(F1, threshold)``: the best pixel F1 over the bin edges."""
        if not self.positives.any():
            raise ValueError("best_f1_threshold needs defect pixels")
        return _best_f1(self.positives, self.negatives, BIN_EDGES)
