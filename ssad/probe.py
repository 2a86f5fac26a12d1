"""Synthetic defects on good images: a test set that needs no real defects.

``synthetic_defects`` pastes one defect of a kind the training corruption never makes into
each image: dark or bright blobs of several sizes, thin lines and holes, or a patch of texture
from elsewhere in the picture. The repair probe (``repair_ratios``, logged every training epoch)
measures how much of each kind the autoencoder removes, which tells, from defect-free images
alone, whether its heatmap can see such defects at all. (Choosing the heatmap's normalisation
by how well these defects are found was tried and dropped: on the shared data sets it
preferred other settings than the real defects did.)
"""

from __future__ import annotations

import numpy as np

KINDS = ("dark_blob", "bright_blob", "line", "hole", "patch")


def synthetic_defects(
    images: np.ndarray,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(defective images, masks, kinds)``: float32 ``[n, h, w, 3]`` in [0, 1], bool
    ``[n, h, w]`` and the kind of each image's defect (``kinds`` in turn, from a random start).

    ``images``: ``[n, h, w, 3]`` uint8 or float in [0, 1]. Sizes are relative to the image.
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    rng = np.random.default_rng(seed)
    n, h, w = x.shape[:3]
    out, masks, chosen = x.copy(), np.zeros((n, h, w), bool), []
    yy, xx = np.mgrid[0:h, 0:w]
    start = int(rng.integers(len(kinds)))
    for i in range(n):
        kind = kinds[(start + i) % len(kinds)]
        side = min(h, w)
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        if kind in ("dark_blob", "bright_blob", "hole"):
            ry, rx = rng.uniform(0.02, 0.08, 2) * side
            if kind == "hole":
                ry, rx = ry / 2, rx / 2
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        elif kind == "line":
            angle, length = rng.uniform(0, np.pi), rng.uniform(0.15, 0.4) * side
            dy, dx = np.sin(angle), np.cos(angle)
            along = (yy - cy) * dy + (xx - cx) * dx
            across = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
            mask = (np.abs(along) <= length / 2) & (across <= max(1.0, 0.006 * side))
        else:  # a patch of the same image from elsewhere
            s = max(4, int(rng.uniform(0.08, 0.15) * side))
            top, left = int(min(cy, h - s)), int(min(cx, w - s))
            sy, sx = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            out[i, top : top + s, left : left + s] = x[i, sy : sy + s, sx : sx + s]
            mask = np.zeros((h, w), bool)
            mask[top : top + s, left : left + s] = True
        level = float(x[i][mask].mean()) if mask.any() else 0.5
        if kind == "dark_blob":
            out[i][mask] = x[i][mask] * 0.3
        elif kind == "bright_blob":
            out[i][mask] = 0.6 + 0.4 * x[i][mask]
        elif kind in ("line", "hole"):  # the opposite of what is there
            out[i][mask] = 0.05 if level > 0.5 else 0.95
        mask &= np.abs(out[i] - x[i]).max(axis=-1) > 1e-3  # only pixels that changed
        masks[i] = mask
        chosen.append(kind)
    return out, masks, chosen


def repair_ratios(
    reconstructions: np.ndarray,
    clean: np.ndarray,
    defective: np.ndarray,
    masks: np.ndarray,
    kinds: list[str],
) -> dict[str, float]:
    """How much of each kind of defect the autoencoder keeps, ``{kind: ratio}``.

    The ratio is the squared error of the reconstruction against the clean image inside the
    defects, divided by that of the defective input itself (simply copying the defect): 0
    means the defect was removed, 1 that it was reproduced as it is, so that the heatmap
    cannot see it. Arrays as ``synthetic_defects`` returns them.
    """
    kept: dict[str, list[float]] = {}
    for r, c, d, m, kind in zip(reconstructions, clean, defective, masks, kinds, strict=True):
        if m.any():
            total = np.square(d[m] - c[m]).sum()
            kept.setdefault(kind, []).append(np.square(r[m] - c[m]).sum() / max(total, 1e-12))
    return {kind: float(np.mean(v)) for kind, v in sorted(kept.items())}
