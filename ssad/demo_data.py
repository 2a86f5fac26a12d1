"""A small MVTec-layout data set cut from the texture photographs inside scikit-image.

``make_demo_data`` crops ``skimage.data.brick()``, ``.grass()`` or ``.gravel()`` (512x512,
grayscale, CC0) into ``train/good`` (top 60 % of the photo) and ``test/good`` (bottom 40 %),
each crop randomly rotated by a multiple of 90 degrees and flipped, and draws four kinds of
inspection defects onto further crops of the test part: a scratch (thin bright or dark
curve), a hole (dark round blob with a soft edge), a crack (dark, jagged, branching line) and
a stain (translucent tinted blot). None of them is the elastic patch warping the model trains on.
Every drawing has an opacity map ``alpha`` in [0, 1]; the ground-truth mask is ``alpha >= 0.5``.
``shapes="varied"`` cuts crops of random size and aspect instead (for ``data.resize``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import skimage.data
from scipy import ndimage
from scipy.spatial import cKDTree

from ssad.errors import DataError
from ssad.files import atomic_dir, atomic_write_text
from ssad.images import write_png

TEXTURES = ("brick", "grass", "gravel")
# Share of the photo's rows (square crops) or columns (varied crops) that training crops come
# from; test crops use the rest. The photos are perspective views (the bricks grow from top to
# bottom): varied crops keep the pixel scale, so both parts must hold every scale, hence
# columns; square crops keep the split by rows they always had (by columns the demo's image
# AUROC was 0.589 and 0.695 against 0.752 and 0.612 by rows, seeds 0 and 1: no difference).
TRAIN_SHARE = 0.6

_README = """\
ssad demo data: {texture}, seed {seed}
Cut from skimage.data.{texture}() (CC0, see the scikit-image documentation).
train/good: {n_train} crops of the {part} {top} % of the photo; test/good: {n_good} crops of the
rest; test/<defect>: {n_defect} drawn defects each, masks in ground_truth/<defect>/.
"""


def make_demo_data(
    out: str | os.PathLike,
    texture: str = "brick",
    seed: int = 0,
    n_train: int = 120,
    n_good: int = 20,
    n_defect: int = 15,
    size: int = 128,
    shapes: str = "square",
) -> Path:
    """Write the demo data set to the new folder ``out`` and return its path.

    ``n_train`` training crops, ``n_good`` defect-free and ``n_defect`` crops per defect kind
    for testing, all ``size`` pixels square; ``shapes="varied"``: crops of random size and
    aspect at the photo's own scale (shorter side ``size / 2`` to ``1.5 * size`` pixels, aspect
    w/h 0.4 to 2.5 within the photo's bounds), defects drawn on a square part of each of side
    ``size`` (or its shorter side), so that they keep one pixel scale.
    The same arguments give the same files.
    """
    if shapes not in ("square", "varied"):
        raise DataError(f"unknown shapes {shapes!r}; choose square or varied")
    if texture not in TEXTURES:
        raise DataError(f"unknown texture {texture!r}; choose one of {', '.join(TEXTURES)}")
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; choose a new folder for the demo data")
    photo = getattr(skimage.data, texture)().astype(np.float32) / 255.0
    if shapes == "varied":
        photo = photo.T  # split by columns (see TRAIN_SHARE)
    split = int(round(photo.shape[0] * TRAIN_SHARE))
    if min(split, photo.shape[0] - split) < size:
        raise DataError(f"crop size {size} is too large for the {photo.shape[0]}-pixel photo")
    top, bottom = photo[:split], photo[split:]
    rng = np.random.default_rng(seed)
    crop = _crop if shapes == "square" else _varied_crop
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        _write_all(tmp / "train" / "good", [crop(top, size, rng) for _ in range(n_train)])
        _write_all(tmp / "test" / "good", [crop(bottom, size, rng) for _ in range(n_good)])
        for defect, draw in DEFECTS.items():
            images, masks = [], []
            for _ in range(n_defect):
                image, alpha = _on_square_part(crop(bottom, size, rng), size, draw, rng)
                images.append(image)
                masks.append(alpha >= 0.5)
            _write_all(tmp / "test" / defect, images)
            _write_all(tmp / "ground_truth" / defect, masks, suffix="_mask")
        text = _README.format(
            texture=texture,
            seed=seed,
            n_train=n_train,
            top=round(100 * TRAIN_SHARE),
            part="top" if shapes == "square" else "left",
            n_good=n_good,
            n_defect=n_defect,
        )
        atomic_write_text(tmp / "README.txt", text)
    return out


def _write_all(folder: Path, arrays: list[np.ndarray], suffix: str = "") -> None:
    folder.mkdir(parents=True)
    for i, x in enumerate(arrays):
        write_png(folder / f"{i:03d}{suffix}.png", x)


def _crop(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` square of a grayscale region, rotated and flipped, as RGB."""
    y = rng.integers(0, region.shape[0] - size + 1)
    x = rng.integers(0, region.shape[1] - size + 1)
    crop = np.rot90(region[y : y + size, x : x + size], k=rng.integers(4))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.repeat(crop[..., None], 3, axis=-1)


def _varied_crop(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of random size and aspect (see ``make_demo_data``), rotated and flipped."""
    short = rng.uniform(0.5, 1.5) * size
    aspect = np.exp(rng.uniform(np.log(0.4), np.log(2.5)))  # w / h of the crop
    long = short * max(aspect, 1 / aspect)
    if region.shape[0] < region.shape[1]:
        region = region.T  # cut the long side along the region's long axis
    h = int(min(region.shape[0], max(32, round(long))))
    w = int(min(region.shape[1], max(32, round(short))))
    y = rng.integers(0, region.shape[0] - h + 1)
    x = rng.integers(0, region.shape[1] - w + 1)
    crop = region[y : y + h, x : x + w]  # tall
    if aspect > 1:
        crop = crop.T  # wide
    crop = np.rot90(crop, k=2 * rng.integers(2))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.repeat(np.ascontiguousarray(crop)[..., None], 3, axis=-1)


def _on_square_part(image: np.ndarray, size: int, draw, rng: np.random.Generator):
    """``draw`` (a defect) on a random square part of ``image`` of side ``size`` (or the
    image's shorter side, when smaller): defects keep one pixel scale in crops of any size.
    Returns ``(image, alpha [h, w])``."""
    h, w = image.shape[:2]
    if h == w == size:
        return draw(image, rng)
    side = min(h, w, size)
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    part, part_alpha = draw(image[y : y + side, x : x + side], rng)
    image, alpha = image.copy(), np.zeros((h, w), np.float32)
    image[y : y + side, x : x + side] = part
    alpha[y : y + side, x : x + side] = part_alpha
    return image, alpha


# -- geometry ----------------------------------------------------------------------------------


def _distance_to_path(points: np.ndarray, size: int) -> np.ndarray:
    """Distance of every pixel centre of a ``size`` square to a polyline ``[(y, x), ...]``."""
    steps = [
        np.linspace(a, b, max(2, int(np.hypot(*(b - a)) * 3)))
        for a, b in zip(points[:-1], points[1:], strict=True)
    ]
    dense = np.concatenate(steps)
    grid = np.stack(np.mgrid[:size, :size], axis=-1).reshape(-1, 2) + 0.5
    distance, _ = cKDTree(dense).query(grid)
    return distance.reshape(size, size)


def _line_alpha(distance: np.ndarray, half_width: float) -> np.ndarray:
    """Anti-aliased stroke: 1 within ``half_width``, fading to 0 over one pixel."""
    return np.clip(half_width + 0.5 - distance, 0.0, 1.0)


def _inner_point(rng: np.random.Generator, size: int, margin: float) -> np.ndarray:
    return rng.uniform(margin, size - margin, 2)


def _blend(image: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip((1.0 - a) * image + a * target, 0.0, 1.0)


# -- defects: (image, rng) -> (image with the defect, opacity map) ------------------------------


def _scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved line, brighter or darker than its surroundings."""
    size = image.shape[0]
    start = _inner_point(rng, size, 0.15 * size)
    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.6) * size
    end = np.clip(start + length * np.array([np.sin(angle), np.cos(angle)]), 2, size - 2)
    bend = (start + end) / 2 + rng.normal(0, 0.12 * size, 2)
    t = np.linspace(0, 1, 24)[:, None]
    curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * bend + t**2 * end  # quadratic Bezier
    alpha = _line_alpha(_distance_to_path(curve, size), rng.uniform(0.5, 1.1))
    shade = rng.uniform(0.85, 0.95) if rng.random() < 0.6 else rng.uniform(0.05, 0.15)
    strength = rng.uniform(0.6, 0.85)
    return _blend(image, alpha * strength, np.full_like(image, shade)), alpha


def _hole(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, slightly elliptic blob with a soft rim."""
    size = image.shape[0]
    radius = rng.uniform(0.025, 0.07) * size
    centre = _inner_point(rng, size, radius + 4)
    stretch, turn = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:size, :size] + 0.5 - centre[:, None, None]
    u = np.cos(turn) * yy + np.sin(turn) * xx
    v = (-np.sin(turn) * yy + np.cos(turn) * xx) / stretch
    edge = rng.uniform(0.8, 2.0)
    alpha = 1.0 / (1.0 + np.exp((np.hypot(u, v) - radius) / edge * 2.0))
    darkness = rng.uniform(0.6, 0.85)
    return _blend(image, alpha * darkness, image * 0.15), alpha


def _crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, jagged line with one or two side branches."""
    size = image.shape[0]

    def walk(start, heading, steps):
        points = [start]
        for _ in range(steps):
            heading += rng.uniform(-0.2, 0.2)  # slow drift, plus a jag at every step
            turn = heading + rng.uniform(-0.8, 0.8)
            step = rng.uniform(2.0, 4.5) * np.array([np.sin(turn), np.cos(turn)])
            points.append(np.clip(points[-1] + step, 1, size - 1))
        return np.array(points)

    main = walk(
        _inner_point(rng, size, 0.25 * size), rng.uniform(0, 2 * np.pi), rng.integers(12, 22)
    )
    distance = _distance_to_path(main, size)
    for _ in range(rng.integers(1, 3)):
        i = rng.integers(2, len(main) - 2)
        heading = np.arctan2(*(main[i + 1] - main[i])) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        branch = walk(main[i], heading, rng.integers(4, 9))
        distance = np.minimum(distance, _distance_to_path(branch, size))
    alpha = _line_alpha(distance, rng.uniform(0.5, 1.0))
    darkness = rng.uniform(0.55, 0.8)
    return _blend(image, alpha * darkness, image * 0.1), alpha


_TINTS = np.array(
    [
        [1.0, 0.72, 0.42],  # rust / coffee
        [0.72, 0.9, 0.55],  # green algae
        [0.62, 0.66, 0.85],  # bluish oil
        [0.55, 0.5, 0.45],  # grime
    ],
    dtype=np.float32,
)


def _stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A translucent tinted blot with an irregular, soft outline; the texture shows through."""
    size = image.shape[0]
    radius = rng.uniform(0.08, 0.16) * size
    centre = _inner_point(rng, size, radius * 1.5)
    yy, xx = np.mgrid[:size, :size] + 0.5 - centre[:, None, None]
    noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), radius / 3, mode="wrap")
    noise /= noise.std() + 1e-8
    reach = radius * (1.0 + 0.3 * np.clip(noise, -2.0, 2.0))  # a wobbly outline
    inside = (np.hypot(yy, xx) < reach).astype(np.float32)
    alpha = ndimage.gaussian_filter(inside, rng.uniform(1.0, 2.5))
    tint = _TINTS[rng.integers(len(_TINTS))]
    opacity = rng.uniform(0.5, 0.8)
    return _blend(image, alpha * opacity, image * tint), alpha


DEFECTS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch,
    "hole": _hole,
    "crack": _crack,
    "stain": _stain,
}
