"""Finding and reading the images of a data set: the MVTec AD layout or a plain folder.

Training: ``training_image_paths`` lists the defect-free images, ``load_working_images`` decodes
them at the working geometry (``ssad.data.geometry``), ``load_images`` to one uint8 array at a
square resolution. Evaluation: ``test_samples`` lists images
with their defect class and mask file, and ``read_sample`` reads one at a time (bounded memory
for any number of test images). All decoding goes through ``ssad.images``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssad.config import DataConfig
from ssad.data.geometry import MIN_SIDE, mode_of, resolve_resize, working_size
from ssad.errors import BadImageError, DataError
from ssad.images import image_size, is_image_file, list_images, read_image, read_mask, resize

Source = str | os.PathLike | Sequence[str | os.PathLike]


def training_image_paths(source: Source) -> list[Path]:
    """The defect-free training images of ``source``.

    ``source``: an MVTec AD category folder (its ``train/good`` images), a plain folder of
    images, or a list of image files. Raises ``DataError`` when no image is found.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder")
        if (folder / "train" / "good").is_dir():
            folder = folder / "train" / "good"
        paths = list_images(folder)
        if not paths:
            raise DataError(f"{folder}: no images (.png, .jpg, .jpeg, .bmp, .gif) in this folder")
        return paths
    paths = [Path(p) for p in source]
    if not paths:
        raise DataError("the list of training images is empty")
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: no such image file")
    return paths


def load_images(
    paths: Sequence[str | os.PathLike], resolution: int, on_bad: str = "error"
) -> tuple[np.ndarray, list[BadImageError]]:
    """Decode ``paths`` and resize each (anti-aliased) to ``resolution`` x ``resolution``.

    Returns ``(images, skipped)``: uint8 ``[n, resolution, resolution, 3]`` and the files that
    could not be decoded. Such a file raises ``BadImageError`` with ``on_bad="error"``; with
    ``"skip"`` it is left out and listed.
    """

    def read(path: Path) -> np.ndarray:
        return _to_uint8(resize(read_image(path), resolution, resolution))

    images, _, skipped = _read_each(paths, on_bad, read)
    if not images:
        return np.empty((0, resolution, resolution, 3), np.uint8), skipped
    return np.stack(images), skipped


def load_working_images(
    paths: Sequence[str | os.PathLike], data: DataConfig, on_bad: str = "error"
) -> tuple[np.ndarray | list[np.ndarray], DataConfig, list[Path], list[BadImageError]]:
    """Decode ``paths`` at the working geometry of ``data`` (``ssad.data.geometry``).

    Returns ``(images, data, kept, skipped)``: uint8 images (one array when all have one size,
    else a list), ``data`` with ``resize`` and ``scale`` resolved from the images' sizes, the
    paths that were read and the files that were not (see :func:`load_images`).
    """
    skipped: list[BadImageError] = []
    if data.resize == "auto" or (data.resize == "scale" and data.scale is None):
        sizes, paths, skipped = _read_each(paths, on_bad, image_size)  # headers only
        data = resolve_resize(data, sizes)
    images, kept, more = _read_each(paths, on_bad, lambda path: read_working(path, data))
    if len({x.shape for x in images}) == 1:
        return np.stack(images), data, kept, skipped + more
    return images, data, kept, skipped + more


def read_working(path: str | os.PathLike, data: DataConfig) -> np.ndarray:
    """One image as uint8 at the working geometry of ``data`` (its mode resolved). At
    ``scale`` and ``native`` an image smaller than ``MIN_SIDE`` pixels there is a bad image."""
    x = read_image(path)
    h, w = x.shape[:2]
    size = working_size(h, w, data)
    if mode_of(data) != "square" and min(size) < MIN_SIDE:
        raise BadImageError(
            path, f"too small: {w}x{h} pixels, {size[1]}x{size[0]} at the working "
            f"scale; images need a side of at least {MIN_SIDE} there"
        )  # fmt: skip
    return _to_uint8(resize(x, *size))


def check_on_bad(on_bad: str) -> None:
    """``ValueError`` unless ``on_bad`` is ``"error"`` or ``"skip"`` (the bad-image policy)."""
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")


def _read_each(paths: Sequence, on_bad: str, read) -> tuple[list, list[Path], list]:
    """``(read(path) of each readable path, those paths, BadImageError of the others)``: a
    ``BadImageError`` raises with ``on_bad="error"`` and is listed with ``"skip"``;
    ``DataError`` when no path is readable."""
    check_on_bad(on_bad)
    values, kept, skipped = [], [], []
    for path in map(Path, paths):
        try:
            values.append(read(path))
        except BadImageError as e:
            if on_bad == "error":
                raise
            skipped.append(e)
            continue
        kept.append(path)
    if paths and not values:
        raise DataError(f"none of the {len(paths)} images could be read")
    return values, kept, skipped


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class TestSample:
    """One evaluation image: its file, defect class (``good`` = defect-free) and mask file."""

    __test__ = False  # not a pytest test class despite the name

    path: Path
    defect: str
    mask_path: Path | None


def test_samples(
    source: str | os.PathLike, mask_dir: str | os.PathLike | None = None
) -> list[TestSample]:
    """The evaluation images of ``source``, sorted by defect class and name.

    MVTec AD layout (``source/test/<defect>/``): masks from
    ``source/ground_truth/<defect>/<stem>_mask.png`` (``good`` has none; a missing mask gives
    ``mask_path=None``). A plain folder of images: defect ``"unknown"``, masks from
    ``mask_dir`` matched by stem (``<stem>.png`` or ``<stem>_mask.png``).
    """
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / "test").is_dir():
        return _mvtec_test_samples(root)
    paths = list_images(root)
    if not paths:
        raise DataError(f"{root}: no images (.png, .jpg, .jpeg, .bmp, .gif) in this folder")
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise DataError(f"{mask_dir}: mask folder not found")
    return [
        TestSample(p, "unknown", _find_mask(Path(mask_dir), p.stem) if mask_dir else None)
        for p in paths
    ]


test_samples.__test__ = False  # not a pytest test function despite the name


def _mvtec_test_samples(root: Path) -> list[TestSample]:
    samples = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        defect = folder.name
        for p in list_images(folder):
            mask = None
            if defect != "good":
                candidate = root / "ground_truth" / defect / f"{p.stem}_mask.png"
                mask = candidate if candidate.is_file() else None
            samples.append(TestSample(p, defect, mask))
    if not samples:
        raise DataError(f"{root / 'test'}: no images in its defect folders")
    return samples


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}.png", f"{stem}_mask.png"):
        if is_image_file(mask_dir / name):
            return mask_dir / name
    return None


def read_sample(sample: TestSample) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image float32 [h, w, 3] in [0, 1], mask bool [h, w] or None)`` at the image's size.

    A mask of another size is resized (nearest) to the image with a warning; any non-zero mask
    pixel is a defect.
    """
    image = read_image(sample.path)
    if sample.mask_path is None:
        return image, None
    mask = read_mask(sample.mask_path)
    h, w = image.shape[:2]
    if mask.shape != (h, w):
        warnings.warn(
            f"{sample.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h};"
            " resizing the mask (nearest)",
            stacklevel=2,
        )
        mask = resize(mask.astype(np.uint8)[..., None], h, w, method="nearest")[..., 0] > 0
    return image, mask
