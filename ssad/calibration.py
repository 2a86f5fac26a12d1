"""A detector's thresholds: from defect-free images alone, or F1-optimal on labelled ones.

``calibrate_on_good`` fits the good-image statistics of ``score.normalize`` and
``score.image_normalize`` (``ssad.statistics``) on defect-free images (after training: the
held-out ones) and takes high quantiles of their normalised pixel and image scores as
thresholds, cross-fitted so that no image is scored with statistics it helped to make.
``calibrate_f1`` picks the F1-optimal thresholds on a labelled data set.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ssad import metrics
from ssad.data.geometry import mode_of
from ssad.detection import Detector, as_image_list, batches
from ssad.errors import BadImageError, ConfigError, DataError
from ssad.run import Calibration
from ssad.statistics import GoodStatistics, fit_statistics


def calibrate_on_good(
    detector: Detector, images, batch_size: int = 8
) -> tuple[Calibration, GoodStatistics]:
    """``(calibration, statistics)`` from the defect-free ``images`` (any form ``Detector``
    accepts, e.g. the held-out good images ``[n, h, w, 3]`` or a list of any sizes).

    The statistics are fitted on all ``images``; the thresholds are the
    ``score.pixel_quantile`` quantile of their normalised pixel scores and the
    ``image_quantile`` quantile of their image scores, each half of the images scored with
    statistics fitted on the other half (so the thresholds hold for new good images).
    """
    items, _ = as_image_list(images)
    if not items:
        raise DataError("calibration needs at least one defect-free image")
    good = _GoodMaps(detector, items, batch_size)
    score_cfg = detector.config.score
    fixed_size = mode_of(detector.config.data) == "square"
    modes = resolve_normalization(score_cfg, good.xs, fixed_size)
    if modes[1] is None and score_cfg.image_terms != score_cfg.map_terms:
        modes = (modes[0], modes[0])  # the image score's maps need statistics of their own
    counts, scores = np.zeros(metrics.N_BINS), []
    for stats, chosen in good.cross_fitted(*modes):
        for part in batches(list(chosen), batch_size, key=lambda i: good.xs[i].shape):
            heat, s = detector.finish(
                *(np.stack([seq[i] for i in part]) for seq in (good.maps, good.xs, good.recons)),
                stats,
            )
            counts += metrics.histogram(heat)
            scores.extend(s.tolist())
    calibration = Calibration(
        pixel_threshold=metrics.histogram_quantile(counts, score_cfg.pixel_quantile),
        image_threshold=float(np.quantile(scores, score_cfg.image_quantile)),
        method="good-quantile",
        n_images=len(items),
        normalize=modes[0],
        image_normalize=modes[1],
        score=detector.score_settings(),
    )
    return calibration, good.fit(*modes, np.arange(len(items)))


def calibrate_f1(
    detector: Detector,
    data_dir: str | os.PathLike,
    batch_size: int = 8,
    on_bad: str = "error",
    progress: bool = False,
) -> tuple[Calibration, list[BadImageError]]:
    """``(calibration, skipped)``: F1-optimal thresholds on the labelled images of
    ``data_dir`` (MVTec layout, or a folder with masks, see ``ssad.data.readers.test_samples``).

    The image threshold maximises image-level F1; the pixel threshold pixel-level F1 when every
    defective image has a mask, else it stays the detector's current one.
    """
    from ssad.data.readers import test_samples
    from ssad.scan import collect, has_masks

    if not has_masks(test_samples(data_dir)) and detector.calibration is None:
        raise DataError(
            f"{data_dir}: not every defect image has a mask, so F1 cannot choose the pixel "
            "threshold and the run has none yet; use --method good-quantile"
        )
    found, skipped = collect(detector, data_dir, batch_size, on_bad=on_bad, progress=progress)
    labels, pixels = found.labels, found.pixel_metrics()
    if all(labels) or not any(labels):
        raise DataError(f"{data_dir}: F1 calibration needs both good and defective images")
    f1_image, image_threshold = metrics.best_f1_threshold(labels, found.scores)
    details = {"n_defective": int(np.sum(labels)), "data_dir": str(data_dir), "f1_image": f1_image}
    if pixels is not None and pixels.has_defects:
        details["f1_pixel"], pixel_threshold = pixels.best_f1_threshold()
    else:
        pixel_threshold = detector.pixel_threshold
        details["pixel_threshold_from"] = detector.calibration.method
    calibration = Calibration(
        pixel_threshold=pixel_threshold,
        image_threshold=image_threshold,
        method="f1",
        n_images=len(labels),
        **detector.normalizations(),
        score=detector.score_settings(),
        details=details,
    )
    return calibration, skipped


def good_test_images(
    data_dir: str | os.PathLike, on_bad: str = "error"
) -> tuple[list[np.ndarray], list[BadImageError]]:
    """``(images, skipped)``: the defect-free test images of ``data_dir`` (``test/good/``)."""
    from ssad.data.readers import check_on_bad, read_sample, test_samples

    check_on_bad(on_bad)
    images, skipped = [], []
    for sample in test_samples(data_dir):
        if sample.defect == "good":
            try:
                images.append(read_sample(sample)[0])
            except BadImageError as e:
                if on_bad == "error":
                    raise
                skipped.append(e)
    if not images:
        raise DataError(f"{data_dir}: no defect-free test images (test/good/) to calibrate on")
    return images, skipped


class _GoodMaps:
    """Raw error maps of good images at the working geometry (lists: sizes may differ), and
    statistics fitted on chosen ones."""

    def __init__(self, detector: Detector, items: list[np.ndarray], batch_size: int):
        self.detector = detector
        self.maps: list[np.ndarray] = []
        self.xs: list[np.ndarray] = []
        self.recons: list[np.ndarray] = []
        for batch in batches(items, batch_size):
            m, x, r = detector.working_maps(np.stack(batch))
            self.maps.extend(m)
            self.xs.extend(x)
            self.recons.extend(r)
        self._guides = None

    def fit(self, mode: str, image_mode: str | None, chosen: np.ndarray) -> GoodStatistics:
        """Statistics of ``mode`` fitted on the images ``chosen``, with those of
        ``image_mode`` for the image score (``None``: the heatmap's)."""
        score = self.detector.config.score
        stats = self._fit(mode, chosen, score.map_terms)
        if image_mode is None:
            return stats
        return dataclasses.replace(stats, image=self._fit(image_mode, chosen, score.image_terms))

    def _fit(self, mode: str, chosen: np.ndarray, terms) -> GoodStatistics:
        """Statistics of the maps ``terms``, with the global statistics that
        ``score.global_mix`` mixes a pixel or structure map with."""
        d = self.detector
        guides = None
        if mode == "structure":
            if self._guides is None:
                self._guides = structure_guides(
                    self.xs, self.recons, d.sigma, d.config.score.structure_guide
                )
            guides = [self._guides[i] for i in chosen]
        channels = [d.config.score.all_terms.index(t) for t in terms]
        maps = [self.maps[i][..., channels] for i in chosen]
        floor = d.config.score.std_floor
        stats = fit_statistics(mode, maps, guides, d.sigma, floor)
        if mode in ("pixel", "structure"):
            overall = fit_statistics("global", maps, None, 0, floor)
            stats = dataclasses.replace(stats, overall=overall)
        return stats

    def cross_fitted(
        self, mode: str, image_mode: str | None
    ) -> Iterator[tuple[GoodStatistics, np.ndarray]]:
        """``(statistics, images scored with them)``: each half with the other's."""
        everything = np.arange(len(self.maps))
        if len(everything) < 2:
            yield self.fit(mode, image_mode, everything), everything
            return
        halves = (everything[0::2], everything[1::2])
        yield self.fit(mode, image_mode, halves[1]), halves[0]
        yield self.fit(mode, image_mode, halves[0]), halves[1]


def resolve_normalization(
    score, xs: list[np.ndarray], fixed_size: bool = True
) -> tuple[str, str | None]:
    """``(heatmap mode, image score mode or None: the heatmap's)``: ``score.normalize`` and
    ``score.image_normalize`` of the ``ScoreConfig`` ``score`` resolved on the
    working-geometry good images ``xs``. ``auto``: ``pixel`` for object-like images of one
    size (``ssad.inspection.stationarity``) at a working geometry of one size for every input
    (``fixed_size``: ``data.resize=square``), else ``structure`` (heatmap) or the heatmap's
    (image score). ``pixel`` with images of several sizes is a ``ConfigError``."""
    one_size = len({x.shape for x in xs}) == 1
    for key in ("normalize", "image_normalize"):
        if getattr(score, key) == "pixel" and not one_size:
            raise ConfigError(
                f"score.{key}=pixel needs images of one size at the working geometry "
                "(data.resize=square); use structure or global"
            )
    modes = (score.normalize, score.image_normalize)
    object_like = "auto" in modes and fixed_size and one_size and _object_like(np.stack(xs))
    mode, image_mode = (
        ("pixel" if object_like else otherwise) if m == "auto" else m
        for m, otherwise in zip(modes, ("structure", "same"), strict=True)
    )
    return mode, None if image_mode in ("same", mode) else image_mode


def _object_like(x: np.ndarray) -> bool:
    """Whether the images ``x`` ``[n, h, w, 3]`` are object-like (``ssad.inspection``; it
    takes squares: other images are squashed to one)."""
    from ssad.inspection import stationarity

    if x.shape[1] != x.shape[2]:
        side = min(x.shape[1:3])
        x = tf.image.resize(x, (side, side), antialias=True).numpy()
    return not stationarity(x).texture_like


def structure_guides(
    xs: list[np.ndarray], recons: list[np.ndarray], sigma: float, source: str
) -> list[np.ndarray]:
    """The structure guides (``ssad.scoring.structure_guide``) of working-geometry images
    ``xs`` and their reconstructions ``recons``, a batch at a time."""
    from ssad.scoring import structure_guide

    guides: list[np.ndarray] = []
    for part in batches(list(range(len(xs))), 16, key=lambda i: xs[i].shape):
        x, r = (tf.constant(np.stack([seq[i] for i in part])) for seq in (xs, recons))
        guides.extend(structure_guide(x, r, sigma, source).numpy())
    return guides
