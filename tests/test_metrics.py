"""ssad.metrics against scikit-learn and against slow, obviously correct references."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ssad import metrics


def test_image_auroc_and_f1_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.4 * labels, 2)  # rounding makes many ties
    assert metrics.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    predictions = scores >= 0.7
    assert metrics.f1_score(labels, predictions) == pytest.approx(f1_score(labels, predictions))
    best, threshold = metrics.best_f1_threshold(labels, scores)
    brute = max(f1_score(labels, scores >= t) for t in np.unique(scores))
    assert best == pytest.approx(brute)
    assert f1_score(labels, scores >= threshold) == pytest.approx(brute)
    assert metrics.auroc(np.zeros(5, bool), np.arange(5)) is None


def test_streaming_pixel_auroc_within_1e_3_of_sklearn():
    rng = np.random.default_rng(1)
    acc = metrics.PixelMetrics(threshold=0.05)
    all_scores, all_masks = [], []
    for _ in range(12):
        mask = np.zeros((40, 48), bool)
        if rng.random() < 0.7:
            y, x = rng.integers(0, 30, 2)
            mask[y : y + 8, x : x + 12] = True
        # scores spanning several decades, defects shifted up
        heat = rng.lognormal(-5, 1.5, mask.shape) * np.where(mask, 4.0, 1.0)
        acc.update(heat, mask)
        all_scores.append(heat.ravel())
        all_masks.append(mask.ravel())
    scores, labels = np.concatenate(all_scores), np.concatenate(all_masks)
    assert abs(acc.auroc() - roc_auc_score(labels, scores)) < 1e-3
    assert acc.f1() == pytest.approx(f1_score(labels, scores >= 0.05))
    best, threshold = acc.best_f1_threshold()
    assert f1_score(labels, scores >= threshold) == pytest.approx(best, abs=1e-9)


def _regions_8(mask):
    """Connected components with 8-connectivity by flood fill: a list of pixel sets."""
    seen, regions = set(), []
    for start in zip(*np.nonzero(mask), strict=True):
        if start in seen:
            continue
        region, stack = set(), [start]
        seen.add(start)
        while stack:
            y, x = stack.pop()
            region.add((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    q = (y + dy, x + dx)
                    inside = 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1]
                    if inside and q not in seen and mask[q]:
                        seen.add(q)
                        stack.append(q)
        regions.append(region)
    return regions


def _reference_aupro(heatmaps, masks, max_fpr=0.3):
    """The MVTec AD definition, one threshold (each distinct score) at a time."""
    regions = [(h, r) for h, m in zip(heatmaps, masks, strict=True) for r in _regions_8(m)]
    negatives = np.concatenate([h[~m] for h, m in zip(heatmaps, masks, strict=True)])
    fprs, pros = [0.0], [0.0]
    for t in np.unique(np.concatenate([h.ravel() for h in heatmaps]))[::-1]:
        fprs.append(np.mean(negatives >= t))
        pros.append(np.mean([np.mean([h[p] >= t for p in r]) for h, r in regions]))
    area = 0.0
    for i in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[i - 1], fprs[i], pros[i - 1], pros[i]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the last segment at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def _synthetic(rng, levels):
    heatmaps, masks = [], []
    for i in range(6):
        mask = np.zeros((12, 14), bool)
        if i % 3:  # every third image has an empty mask
            for _ in range(rng.integers(1, 4)):  # several regions, some touching diagonally
                y, x = rng.integers(0, 10), rng.integers(0, 12)
                mask[y : y + rng.integers(1, 3), x : x + rng.integers(1, 4)] = True
            mask[0, 0] = mask[1, 1] = True  # one region under 8-connectivity
        heat = rng.choice(levels, mask.shape) + np.where(mask, rng.choice(levels, mask.shape), 0)
        heatmaps.append(heat)
        masks.append(mask)
    return heatmaps, masks


def test_aupro_equals_reference_when_scores_fall_in_distinct_bins():
    rng = np.random.default_rng(2)
    heatmaps, masks = _synthetic(rng, levels=np.linspace(0.01, 0.5, 25))
    acc = metrics.PixelMetrics()
    for h, m in zip(heatmaps, masks, strict=True):
        acc.update(h, m)
    assert acc.regions == sum(len(_regions_8(m)) for m in masks)
    reference = _reference_aupro(heatmaps, masks)
    assert 0.05 < reference < 0.95
    assert acc.aupro() == pytest.approx(reference, abs=1e-9)
    assert acc.aupro(max_fpr=1.0) == pytest.approx(_reference_aupro(heatmaps, masks, 1.0))


def test_aupro_close_to_reference_with_continuous_scores():
    rng = np.random.default_rng(3)
    heatmaps, masks = _synthetic(rng, levels=rng.random(10000))
    acc = metrics.PixelMetrics()
    for h, m in zip(heatmaps, masks, strict=True):
        acc.update(h, m)
    assert abs(acc.aupro() - _reference_aupro(heatmaps, masks)) < 1e-3


def test_pooling_accumulators_equals_one_accumulator():
    rng = np.random.default_rng(4)
    heatmaps, masks = _synthetic(rng, levels=rng.random(100))
    one, a, b = metrics.PixelMetrics(0.5), metrics.PixelMetrics(0.5), metrics.PixelMetrics(0.5)
    for i, (h, m) in enumerate(zip(heatmaps, masks, strict=True)):
        one.update(h, m)
        (a if i < 3 else b).update(h, m)
    pooled = a + b
    assert pooled.auroc() == one.auroc() and pooled.aupro() == one.aupro()
    assert pooled.f1() == one.f1()


def test_histogram_quantile_and_bad_values():
    rng = np.random.default_rng(5)
    values = rng.lognormal(-6, 2, 100000)
    threshold = metrics.histogram_quantile(metrics.histogram(values), 0.999)
    exact = np.quantile(values, 0.999)
    assert exact <= threshold <= exact * 1.001
    assert np.mean(values >= threshold) <= 0.001
    zero, tiny = metrics.bin_index(np.array([0.0, 1e-30]))
    assert zero == tiny == metrics.N_BINS // 2  # the first non-negative bin


def test_signed_values_keep_their_order_and_quantiles():
    rng = np.random.default_rng(6)
    values = rng.normal(0.0, 2.0, 100000)  # normalised heatmaps: centred near 0
    bins = metrics.bin_index(values)
    order = np.argsort(values)
    assert np.all(np.diff(bins[order]) >= 0)  # bins ascend with the value
    assert np.all(metrics.BIN_EDGES[bins] <= values)
    for q in (0.01, 0.5, 0.999):
        threshold = metrics.histogram_quantile(metrics.histogram(values), q)
        kth = np.sort(values)[int(np.ceil(q * len(values))) - 1]  # the q-quantile sample
        assert kth < threshold <= kth + 1e-3 * abs(kth) + 1e-9
        assert np.mean(values >= threshold) <= 1 - q
    labels = values > 1.0 + rng.normal(0, 1, values.shape)
    acc = metrics.PixelMetrics()
    acc.update(values.reshape(100, 1000), labels.reshape(100, 1000))
    assert acc.auroc() == pytest.approx(roc_auc_score(labels, values), abs=1e-4)
    with pytest.raises(ValueError, match="finite"):
        metrics.bin_index(np.array([0.1, np.nan]))
