"""Synthetic defects and the repair probe."""

import numpy as np
import pytest

from ssad.probe import KINDS, repair_ratios, synthetic_defects


def _images(n=10, size=48, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, size, size, 3)) * 0.2 + 0.4).astype(np.float32)


def test_each_image_gets_one_defect_of_each_kind_in_turn_inside_its_mask():
    clean = _images()
    bad, masks, kinds = synthetic_defects(clean, seed=1)
    assert bad.shape == clean.shape and masks.shape == clean.shape[:3]
    assert sorted(set(kinds)) == sorted(KINDS) and len(kinds) == 10
    changed = np.abs(bad - clean).max(axis=-1) > 1e-3
    np.testing.assert_array_equal(changed, masks)  # nothing outside the mask changed
    assert all(m.any() for m in masks) and all(m.mean() < 0.3 for m in masks)
    assert bad.min() >= 0 and bad.max() <= 1
    again = synthetic_defects(clean, seed=1)
    np.testing.assert_array_equal(again[0], bad)  # seeded


def test_repair_ratio_is_0_for_a_perfect_repair_and_1_for_a_copy():
    clean = _images()
    bad, masks, kinds = synthetic_defects(clean, seed=3)
    assert set(repair_ratios(clean, clean, bad, masks, kinds).values()) == {0.0}
    assert repair_ratios(bad, clean, bad, masks, kinds) == {k: 1.0 for k in sorted(KINDS)}
    half = (clean + bad) / 2  # half of every defect kept: a quarter of its squared error
    for value in repair_ratios(half, clean, bad, masks, kinds).values():
        assert value == pytest.approx(0.25, rel=1e-4)
