"""Scoring a labelled data set image by image: ``Scan`` streams ``(sample, image, mask,
heatmap, score)``, ``Collector`` gathers labels, scores and pixel metrics from it.

Memory does not grow with the number of test images: images are read and scored
``batch_size`` at a time, and pixel metrics are fixed-size histograms
(``ssad.metrics.PixelMetrics``). ``evaluate``, ``calibrate_f1`` and the benchmark's sweep all
go through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ssad import metrics
from ssad.data.geometry import mode_of
from ssad.data.readers import TestSample, check_on_bad, read_sample, test_samples
from ssad.errors import BadImageError, DataError
from ssad.images import resize
from ssad.progress import progress_bar


class Scored(NamedTuple):
    """One scored test image (image and mask at the metrics' resolution)."""

    sample: TestSample
    image: np.ndarray
    mask: np.ndarray | None
    heatmap: np.ndarray
    score: float

    @property
    def label(self) -> bool:
        """Defective? From the defect folder (MVTec layout), else from the mask."""
        if self.sample.defect == "unknown":
            return self.mask is not None and bool(self.mask.any())
        return self.sample.defect != "good"


class Scan:
    """Iterate over the :class:`Scored` ``samples`` (``ssad.data.readers.TestSample``).

    ``resolution``: resize images (and masks, nearest) to that square side first (``None``:
    score them at their own size; see :func:`metrics_resolution`). An unreadable image
    raises ``BadImageError`` with ``on_bad="error"``; with ``"skip"`` it is left out and
    listed in ``skipped``.
    """

    def __init__(
        self,
        detector,
        samples: Sequence[TestSample],
        batch_size: int = 8,
        resolution: int | None = None,
        on_bad: str = "error",
        progress: bool = False,
    ):
        check_on_bad(on_bad)
        self.detector, self.samples, self.batch_size = detector, samples, batch_size
        self.resolution, self.on_bad, self.progress = resolution, on_bad, progress
        self.skipped: list[BadImageError] = []

    def __iter__(self) -> Iterator[Scored]:
        bar = progress_bar(len(self.samples)) if self.progress else None
        batch: list[tuple] = []

        def flush():
            heatmaps, scores = self.detector.batch_maps(np.stack([x for _, x, _ in batch]))
            for (sample, image, mask), h, s in zip(batch, heatmaps, scores, strict=True):
                yield Scored(sample, image, mask, h, float(s))
            if bar is not None:
                bar.add(len(batch))

        for sample in self.samples:
            try:
                image, mask = self._read(sample)
            except BadImageError as e:
                if self.on_bad == "error":
                    raise
                self.skipped.append(e)
                if bar is not None:
                    bar.add(1)
                continue
            if batch and (len(batch) == self.batch_size or image.shape != batch[0][1].shape):
                yield from flush()
                batch = []
            batch.append((sample, image, mask))
        if batch:
            yield from flush()

    def _read(self, sample: TestSample):
        image, mask = read_sample(sample)
        side = self.resolution
        if side is not None:
            image = resize(image, side, side)
            if mask is not None:
                mask = resize(mask[..., None].astype(np.uint8), side, side, "nearest")[..., 0] > 0
        return image, mask


class Collector:
    """Labels, scores and pixel metrics (per defect type, when ``with_masks``) of scored
    images; ``pixel_threshold``: the threshold whose pixel F1 is counted."""

    def __init__(self, with_masks: bool, pixel_threshold: float | None = None):
        self.with_masks, self.pixel_threshold = with_masks, pixel_threshold
        self.labels: list[bool] = []
        self.scores: list[float] = []
        self.defects: list[str] = []
        self.pixels: dict[str, metrics.PixelMetrics] = {}

    def add(self, item: Scored) -> None:
        self.labels.append(item.label)
        self.scores.append(item.score)
        self.defects.append(item.sample.defect)
        if self.with_masks:
            pixels = self.pixels.setdefault(
                item.sample.defect, metrics.PixelMetrics(self.pixel_threshold)
            )
            pixels.update(item.heatmap, item.mask)

    def pixel_metrics(self, defect: str | None = None) -> metrics.PixelMetrics | None:
        """All images' pixel metrics, or the good images' with one ``defect`` type's (``None``
        without masks)."""
        if not self.with_masks:
            return None
        empty = metrics.PixelMetrics(self.pixel_threshold)
        if defect is None:
            return sum(self.pixels.values(), empty)
        if defect not in self.pixels:
            return None
        return self.pixels.get("good", empty) + self.pixels[defect]

    def summary(self) -> dict:
        """``{"image_auroc", "pixel_auroc", "aupro"}`` (``None`` where they do not apply)."""
        pixels = self.pixel_metrics()
        with_defects = pixels is not None and pixels.has_defects
        return {
            "image_auroc": metrics.auroc(self.labels, self.scores),
            "pixel_auroc": pixels.auroc() if with_defects else None,
            "aupro": pixels.aupro() if with_defects else None,
        }


def collect(
    detector,
    data_dir: str | os.PathLike,
    batch_size: int = 8,
    resolution: int | None = None,
    on_bad: str = "error",
    progress: bool = False,
) -> tuple[Collector, list[BadImageError]]:
    """``(collector, skipped)``: every test image of ``data_dir`` scored at ``resolution``
    (default :func:`metrics_resolution`)."""
    samples = test_samples(data_dir)
    collector = Collector(has_masks(samples))
    scan = Scan(
        detector, samples, batch_size, resolution or metrics_resolution(detector), on_bad, progress
    )
    for item in scan:
        collector.add(item)
    if not collector.labels:
        raise DataError(f"{data_dir}: none of the {len(samples)} test images could be read")
    return collector, scan.skipped


def metrics_resolution(detector) -> int | None:
    """Where pixel metrics are computed: at the square working resolution when the run
    squares its images (masks resized with them, nearest), else at each image's own size."""
    data = detector.config.data
    return data.resolution if mode_of(data) == "square" else None


def has_masks(samples: Sequence[TestSample]) -> bool:
    """Whether pixel metrics apply: some sample has a mask and every sample of a defect class
    (not ``good``, not ``unknown``) has one."""
    return any(s.mask_path is not None for s in samples) and all(
        s.mask_path is not None for s in samples if s.defect not in ("good", "unknown")
    )
