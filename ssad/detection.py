"""The detector of a trained run: heatmaps, image scores and masks.

``Detector.load(run_dir)`` reads a run directory (``ssad.run.RunDir``). The heatmap is
``ssad.scoring.anomaly_maps`` (the graph the export serves too): the error maps of
``score.map`` at the working geometry, smoothed with sigma ``score.sigma * data.resolution /
256`` pixels, normalised by the good-image statistics (``ssad.statistics``), at each input's own
size; the image score follows ``score.image`` on the maps of ``score.image_map`` normalised
as ``score.image_normalize`` says. A pixel is anomalous when heatmap >= ``pixel_threshold``, an
image when score >= ``image_threshold`` (``ssad.run.Calibration``, made by
``ssad.calibration``). ``Detector.load(run, score_overrides=...)`` rescores a trained run
with other ``score.*`` settings, recalibrating on its held-out images. ``Ensemble`` averages
several runs' heatmaps, each divided by its run's pixel threshold.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from ssad.config import Config
from ssad.data.geometry import to_working, working_size
from ssad.errors import ConfigError, OutdatedStatisticsError, RunDirError, VersionError
from ssad.images import to_rgb
from ssad.run import EARLIER_SCORING, HOW_TO_CALIBRATE, Calibration, RunDir
from ssad.scoring import anomaly_maps, heatmap_and_score, raw_maps
from ssad.statistics import GoodStatistics

# What a calibration without a "score" entry was made for (ssad before the scoring options):
# raw maps, scored as that ssad did.
LEGACY_SCORE = {**EARLIER_SCORING, "score.normalize": "none"}


class BaseDetector:
    """What every detector offers: ``maps``, ``heatmap``, ``score``, ``predict`` and the
    thresholds. Subclasses score one batch in ``batch_maps``.

    Images: a float array ``[b, h, w, 3]`` in [0, 1] (uint8 is scaled), grayscale
    ``[b, h, w]`` or ``[b, h, w, 1]``, a single image ``[h, w, 3]`` or ``[h, w]``, or a list of
    images of any sizes. Array inputs give array outputs (a single image gives a batch of one),
    a list gives lists. Images are processed ``batch_size`` at a time.
    """

    config: Config
    calibration: Calibration | None
    batch_size: int = 8

    def batch_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmaps [b, h, w], scores [b])`` of one float32 batch ``[b, h, w, 3]``."""
        raise NotImplementedError

    # -- thresholds ----------------------------------------------------------------------------
    def _threshold(self, key: str) -> float:
        if self.calibration is None:
            raise RunDirError(f"this detector has no thresholds yet; {HOW_TO_CALIBRATE}")
        return float(getattr(self.calibration, key))

    @property
    def pixel_threshold(self) -> float:
        return self._threshold("pixel_threshold")

    @property
    def image_threshold(self) -> float:
        return self._threshold("image_threshold")

    def score_settings(self) -> dict:
        """The ``score.*`` settings, as a calibration records what it was made for."""
        return self.config.to_dict()["score"]

    def with_threshold(self, pixel: float, image: float | None = None):
        """A copy with manual thresholds; ``image`` defaults to ``pixel``."""
        other = copy.copy(self)  # shares the model, statistics and traced graphs
        other.calibration = Calibration(
            pixel_threshold=float(pixel),
            image_threshold=float(pixel if image is None else image),
            method="manual",
            **self.normalizations(),
            score=self.score_settings(),
        )
        return other

    def normalizations(self) -> dict:
        """``{"normalize", "image_normalize"}`` of the statistics, as a calibration records
        them (``None``: no statistics; the heatmap's)."""
        statistics = getattr(self, "statistics", None)
        return {
            "normalize": None if statistics is None else statistics.mode,
            "image_normalize": None if statistics is None or statistics.image is None
            else statistics.image.mode,
        }  # fmt: skip

    # -- inference -----------------------------------------------------------------------------
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height`` x ``width`` is scored at (``ssad.data.geometry``)."""
        return working_size(height, width, self.config.data)

    def maps(self, images, batch_size: int | None = None):
        """``(heatmaps, scores)`` of ``images`` (see the class docstring for the forms)."""
        items, as_list = as_image_list(images)
        heatmaps: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for batch in batches(items, batch_size or self.batch_size):
            h, s = self.batch_maps(np.stack(batch))
            heatmaps.extend(h)
            scores.append(s)
        scores_array = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        return (heatmaps if as_list else np.stack(heatmaps)), scores_array

    def heatmap(self, images, batch_size: int | None = None):
        """Smoothed anomaly heatmaps, ``[b, h, w]`` (a list for a list input)."""
        return self.maps(images, batch_size)[0]

    def score(self, images, batch_size: int | None = None) -> np.ndarray:
        """Image scores ``[b]`` (``score.image`` of each heatmap at the working geometry)."""
        return self.maps(images, batch_size)[1]

    def predict(self, images, batch_size: int | None = None) -> dict:
        """``{"heatmap", "score", "mask" (heatmap >= pixel threshold), "is_anomalous"
        (score >= image threshold)}``."""
        heatmap, score = self.maps(images, batch_size)
        pixel = self.pixel_threshold
        mask = [h >= pixel for h in heatmap] if isinstance(heatmap, list) else heatmap >= pixel
        return {
            "heatmap": heatmap,
            "score": score,
            "mask": mask,
            "is_anomalous": score >= self.image_threshold,
        }


class Detector(BaseDetector):
    """A trained autoencoder with its config, good-image statistics and thresholds."""

    def __init__(
        self,
        model,
        config: Config,
        calibration: Calibration | None = None,
        statistics: GoodStatistics | None = None,
        batch_size: int = 8,
    ):
        self.model = model
        self.config = config
        self.calibration = calibration
        self.statistics = statistics
        self.batch_size = batch_size
        self.sigma = config.score.sigma * config.data.resolution / 256
        self.k_px = max(1, round(config.score.image_k * config.data.resolution / 256))
        spec = [tf.TensorSpec([None, None, None, 3], tf.float32)]
        self._graph = tf.function(
            self._maps_graph, input_signature=spec, reduce_retracing=True, autograph=False
        )  # autograph off: plain Python control flow on static values, traced as is
        self._raw_graph = tf.function(
            self._raw_maps_graph, input_signature=spec, reduce_retracing=True, autograph=False
        )

    def _maps_graph(self, images):
        heatmap, score, _ = anomaly_maps(
            self.model, images, self.config.data, self.sigma, self.config.score, self.statistics
        )
        return heatmap, score

    def _raw_maps_graph(self, images):
        x = to_working(images, self.config.data)
        maps, recon = raw_maps(self.model, x, self.config.score, self.sigma)
        return maps, x, recon

    @classmethod
    def load(
        cls,
        run_dir: str | os.PathLike,
        require_calibration: bool = True,
        score_overrides: dict | None = None,
    ) -> BaseDetector:
        """Load a run directory; ``RunDirError`` names what is missing or unreadable.
        ``require_calibration=False``: a missing or bad calibration leaves the detector
        without thresholds (for ``ssad calibrate``). ``score_overrides``:
        ``{"score.image": "mean_max", ...}``; when they change the run's scoring, statistics
        and thresholds are recomputed from the run's held-out good images. An ONNX or
        OpenVINO export (``ssad export --format onnx|openvino``) loads as
        ``ssad.runtimes.ExportedDetector``."""
        from ssad.runtimes import ExportedDetector, model_file

        if model_file(run_dir) is not None:
            if score_overrides:
                raise RunDirError(f"{run_dir}: an export's scoring cannot be changed (--set)")
            return ExportedDetector(run_dir)
        run = RunDir(run_dir)
        run.check(calibration=require_calibration)
        calibration, statistics, outdated = None, None, False
        try:
            calibration = run.read_calibration()
            statistics = run.read_statistics() if calibration is not None else None
        except OutdatedStatisticsError as e:
            outdated = require_calibration  # else: about to be replaced (ssad calibrate)
            if outdated:
                warnings.warn(f"{e}; refitting them on the held-out images for now", stacklevel=2)
            else:
                calibration = None
        except RunDirError as e:
            if require_calibration or isinstance(e, VersionError):
                raise  # else: a bad calibration is about to be replaced (ssad calibrate)
            calibration, statistics = None, None
        config = run.read_config()
        if calibration is not None and calibration.score is None:
            # made by an ssad before the scoring options: its thresholds are for raw maxima
            config = config.override(LEGACY_SCORE)
        model = run.load_model()
        # options added after the calibration was made are not in its record: ignored
        made_for = (calibration.score if calibration is not None else None) or {}
        now = config.to_dict()["score"]
        stale = any(now.get(key) != value for key, value in made_for.items())
        if score_overrides:
            if any(not k.startswith("score.") for k in score_overrides):
                raise RunDirError("only score.* settings can be changed on a trained run")
            rescored = config.override(score_overrides)
            stale, config = stale or rescored != config, rescored
        if stale or outdated:  # other scoring than the calibration was made for: redo it
            from ssad.calibration import calibrate_on_good

            calibration, statistics = calibrate_on_good(cls(model, config), run.read_heldout())
        return cls(model, config, calibration, statistics)

    def batch_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fitted = None if self.statistics is None else self.statistics.shape
        size = self.working_size(*batch.shape[1:3])
        if fitted is not None and size != fitted:
            raise ConfigError(
                f"an image of {batch.shape[2]}x{batch.shape[1]} px is scored at {size[1]}x"
                f"{size[0]}, but this run's per-pixel statistics are for {fitted[1]}x"
                f"{fitted[0]}: give images of the training size, or rescore with --set "
                "score.normalize=structure --set score.image_normalize=same"
            )
        heatmap, score = self._graph(tf.convert_to_tensor(batch, tf.float32))
        return heatmap.numpy(), score.numpy()

    def working_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(raw maps [b, h, w, m], images [b, h, w, 3], reconstructions [b, h, w, 3])`` of
        one batch at the working geometry: what the good-image statistics are fitted on."""
        maps, x, recon = self._raw_graph(tf.convert_to_tensor(batch, tf.float32))
        return maps.numpy(), x.numpy(), recon.numpy()

    def finish(self, maps, x, recon, statistics: GoodStatistics | None):
        """``(heatmaps, scores)`` at the working geometry from ``working_maps``' output,
        normalised by ``statistics`` (the same ops as the detection graph)."""
        heat, score = heatmap_and_score(
            *(tf.constant(t) for t in (maps, x, recon)),
            statistics,
            self.sigma,
            self.config.score,
            self.k_px,
        )
        return heat.numpy(), score.numpy()


class Ensemble(BaseDetector):
    """Several runs as one detector: the mean of their heatmaps (scores), each divided by its
    run's pixel (image) threshold; the ensemble's own thresholds are 1.0 on that scale."""

    def __init__(self, detectors: Sequence[Detector], batch_size: int = 8):
        if not detectors:
            raise ValueError("an ensemble needs at least one detector")
        for d in detectors:
            if not (d.pixel_threshold > 0 and d.image_threshold > 0):
                raise RunDirError("an ensemble needs positive thresholds in every run")
        self.detectors = list(detectors)
        self.config = self.detectors[0].config
        self.calibration = Calibration(1.0, 1.0, "ensemble")
        self.batch_size = batch_size

    def batch_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmap, score = 0.0, 0.0
        for d in self.detectors:
            h, s = d.batch_maps(batch)
            heatmap = heatmap + h / d.pixel_threshold
            score = score + s / d.image_threshold
        n = len(self.detectors)
        return (heatmap / n).astype(np.float32), (score / n).astype(np.float32)


def load_detector(
    run_dirs: Sequence[str | os.PathLike],
    threshold: float | None = None,
    score_overrides: dict | None = None,
) -> BaseDetector:
    """A ``Detector`` for one run directory, an ``Ensemble`` for several; ``threshold``
    overrides the pixel and image thresholds (on the ensemble's normalised scale);
    ``score_overrides`` rescore each run (see ``Detector.load``)."""
    if not run_dirs:
        raise RunDirError("no run directory given")
    detectors = [Detector.load(run, score_overrides=score_overrides) for run in run_dirs]
    detector = detectors[0] if len(detectors) == 1 else Ensemble(detectors)
    return detector if threshold is None else detector.with_threshold(threshold)


def as_image_list(images) -> tuple[list[np.ndarray], bool]:
    """``(float32 [h, w, 3] images, whether the input was a list)``: see ``BaseDetector``."""
    if isinstance(images, (list, tuple)):
        return [_as_rgb(x) for x in images], True
    x = np.asarray(images)
    if x.ndim == 4 or (x.ndim == 3 and x.shape[-1] > 4):
        return [_as_rgb(image) for image in x], False
    if x.ndim in (2, 3):
        return [_as_rgb(x)], False
    raise ValueError(f"expected images [b, h, w, c], [b, h, w] or [h, w, c], got shape {x.shape}")


def _as_rgb(x) -> np.ndarray:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / np.iinfo(x.dtype).max
    return to_rgb(x)


def batches(items: list, batch_size: int, key=lambda x: x.shape) -> Iterator[list]:
    """Runs of consecutive items of one ``key`` (by default: same-sized images), at most
    ``batch_size`` long."""
    batch: list = []
    for x in items:
        if batch and (len(batch) == batch_size or key(x) != key(batch[0])):
            yield batch
            batch = []
        batch.append(x)
    if batch:
        yield batch
