"""The detector of a trained run: heatmaps, image scores and masks, and its thresholds.

``Detector.load(run_dir)`` reads ``model.keras``, ``config.json``, ``calibration.json`` and
``statistics.npz``. The heatmap is ``ssad.scoring.anomaly_maps`` (the graph the export serves
too): the error maps of ``score.map`` at the working resolution, smoothed with sigma
``score.sigma * data.resolution / 256`` pixels, normalised by the good-image statistics
(``ssad.statistics``), at each input's own size; the image score follows ``score.image``. A
pixel is anomalous when heatmap >= ``pixel_threshold``, an image when score >=
``image_threshold``.

Calibration: ``calibrate_on_good`` fits the good-image statistics on defect-free images (after
training: the held-out ones, listed in ``heldout.json``) and takes high quantiles of their
normalised pixel and image scores as thresholds, cross-fitted so that no image is scored with
statistics it helped to make; ``calibrate_f1`` picks the F1-optimal thresholds on a labelled
set; ``Detector.with_threshold`` overrides. ``Detector.load(run, score_overrides)`` rescores a
trained run with other ``score.*`` settings, recalibrating on its held-out images.
``Ensemble`` averages several runs' heatmaps, each divided by its run's pixel threshold.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ssad import metrics
from ssad.config import Config
from ssad.data.geometry import mode_of, to_working, working_size
from ssad.errors import BadImageError, ConfigError, DataError, RunDirError, VersionError
from ssad.files import atomic_write_bytes, atomic_write_text
from ssad.images import resize, to_rgb
from ssad.progress import progress_bar
from ssad.scoring import anomaly_maps, image_score, normalized_heatmap, raw_maps
from ssad.statistics import GoodStatistics, fit_statistics

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"
STATISTICS_FILE = "statistics.npz"
# What a calibration without a "score" entry was made for (ssad before the scoring options).
LEGACY_SCORE = {"score.map": "squared", "score.normalize": "none", "score.image": "max"}
HELDOUT_FILE = "heldout.json"
_HOW_TO_CALIBRATE = "make one with `ssad calibrate RUN_DIR DATA_DIR` or pass --threshold"


class Detector:
    """A trained autoencoder with its config and calibration (thresholds).

    Images: a float array ``[b, h, w, 3]`` in [0, 1] (uint8 is scaled), grayscale
    ``[b, h, w]`` or ``[b, h, w, 1]``, a single image ``[h, w, 3]`` or ``[h, w]``, or a list of
    images of any sizes. Array inputs give array outputs (a single image gives a batch of one),
    a list gives lists. Images are processed ``batch_size`` at a time.
    """

    def __init__(
        self,
        model,
        config: Config,
        calibration: dict | None = None,
        statistics: GoodStatistics | None = None,
        batch_size: int = 8,
    ):
        self.model = model
        self.config = config
        self.calibration = dict(calibration) if calibration else None
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
        maps, _ = raw_maps(self.model, x, self.config.score, self.sigma)
        return maps, x

    @classmethod
    def load(
        cls,
        run_dir: str | os.PathLike,
        require_calibration: bool = True,
        score_overrides: dict | None = None,
    ) -> Detector:
        """Load a run directory; ``RunDirError`` names what is missing or unreadable.
        ``require_calibration=False``: a missing or bad ``calibration.json`` leaves the
        detector without thresholds (for ``ssad calibrate``). ``score_overrides``:
        ``{"score.image": "mean_max", ...}``; when they change the run's scoring, statistics
        and thresholds are recomputed from the run's held-out good images."""
        run = Path(run_dir)
        if not run.is_dir():
            raise RunDirError(f"{run}: no such run directory")
        needed = [MODEL_FILE, CONFIG_FILE] + ([CALIBRATION_FILE] if require_calibration else [])
        missing = [name for name in needed if not (run / name).is_file()]
        if missing:
            hint = f" ({_HOW_TO_CALIBRATE})" if missing == [CALIBRATION_FILE] else ""
            missing_text = ", ".join(missing)
            raise RunDirError(f"{run}: incomplete run directory, missing {missing_text}{hint}")
        calibration, statistics = None, None
        if (run / CALIBRATION_FILE).is_file():
            try:
                calibration = load_calibration(run)
                statistics = load_statistics(run)
            except RunDirError as e:
                if require_calibration or isinstance(e, VersionError):
                    raise  # else: a bad calibration is about to be replaced (ssad calibrate)
                calibration, statistics = None, None
        config = Config.load(run / CONFIG_FILE)
        if calibration is not None and "score" not in calibration:
            # made by an ssad before the scoring options: its thresholds are for raw maxima
            config = config.override(LEGACY_SCORE)
        try:
            model = keras.models.load_model(run / MODEL_FILE, safe_mode=True, compile=False)
        except Exception as e:  # Keras raises many types for a damaged or foreign file
            raise RunDirError(f"{run / MODEL_FILE}: cannot load the model ({e})") from e
        # options added after the calibration was made are not in its record: ignored
        made_for, now = (calibration or {}).get("score") or {}, _plain(config)
        stale = any(now.get(key) != value for key, value in made_for.items())
        if score_overrides:
            if any(not k.startswith("score.") for k in score_overrides):
                raise RunDirError("only score.* settings can be changed on a trained run")
            rescored = config.override(score_overrides)
            stale, config = stale or rescored != config, rescored
        if stale:  # other scoring settings than the calibration was made for: redo it
            calibration, statistics = calibrate_on_good(cls(model, config), read_heldout(run))
        return cls(model, config, calibration, statistics)

    # -- thresholds ----------------------------------------------------------------------------
    def _threshold(self, key: str) -> float:
        if self.calibration is None:
            raise RunDirError(f"this detector has no thresholds yet; {_HOW_TO_CALIBRATE}")
        return float(self.calibration[key])

    @property
    def pixel_threshold(self) -> float:
        return self._threshold("pixel_threshold")

    @property
    def image_threshold(self) -> float:
        return self._threshold("image_threshold")

    def with_threshold(self, pixel: float, image: float | None = None) -> Detector:
        """A copy with manual thresholds; ``image`` defaults to ``pixel``."""
        other = copy.copy(self)  # shares the model, statistics and traced graphs
        other.calibration = {
            "pixel_threshold": float(pixel),
            "image_threshold": float(pixel if image is None else image),
            "method": "manual",
            "normalize": None if self.statistics is None else self.statistics.mode,
            "score": _plain(self.config),
        }
        return other

    # -- inference -----------------------------------------------------------------------------
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height`` x ``width`` is scored at (``ssad.data.geometry``)."""
        return working_size(height, width, self.config.data)

    def batch_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmaps [b, h, w], scores [b])`` of one float32 batch ``[b, h, w, 3]``."""
        heatmap, score = self._graph(tf.convert_to_tensor(batch, tf.float32))
        return heatmap.numpy(), score.numpy()

    def working_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(raw maps [b, h, w, m], images [b, h, w, 3])`` of one batch at the working
        geometry: what the good-image statistics are fitted on."""
        maps, x = self._raw_graph(tf.convert_to_tensor(batch, tf.float32))
        return maps.numpy(), x.numpy()

    def finish(self, maps, x, statistics: GoodStatistics | None):
        """``(heatmaps, scores)`` at the working geometry from ``working_maps``' output,
        normalised by ``statistics`` (the same ops as the detection graph)."""
        heat = normalized_heatmap(tf.constant(maps), tf.constant(x), statistics, self.sigma)
        return heat.numpy(), image_score(heat, self.config.score, self.k_px).numpy()

    def maps(self, images, batch_size: int | None = None):
        """``(heatmaps, scores)`` of ``images`` (see the class docstring for the forms)."""
        items, as_list = as_image_list(images)
        heatmaps: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for batch in _batches(items, batch_size or self.batch_size):
            h, s = self.batch_maps(np.stack(batch))
            heatmaps.extend(h)
            scores.append(s)
        scores_array = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        return (heatmaps if as_list else np.stack(heatmaps)), scores_array

    def heatmap(self, images, batch_size: int | None = None):
        """Smoothed anomaly heatmaps, ``[b, h, w]`` (a list for a list input)."""
        return self.maps(images, batch_size)[0]

    def score(self, images, batch_size: int | None = None) -> np.ndarray:
        """Image scores ``[b]``: the maximum of each heatmap at the working resolution."""
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


class Ensemble(Detector):
    """Several runs as one detector: the mean of their heatmaps (scores), each divided by its
    run's pixel (image) threshold; the ensemble's own thresholds are 1.0 on that scale."""

    def __init__(self, detectors: Sequence[Detector], batch_size: int = 8):
        if not detectors:
            raise ValueError("an ensemble needs at least one detector")
        self.detectors = list(detectors)
        self.model = None
        self.config = self.detectors[0].config
        self.calibration = {"pixel_threshold": 1.0, "image_threshold": 1.0, "method": "ensemble"}
        self.statistics = None
        self.batch_size = batch_size
        self.sigma = None
        for d in self.detectors:
            if not (d.pixel_threshold > 0 and d.image_threshold > 0):
                raise RunDirError("an ensemble needs positive thresholds in every run")

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
):
    """A ``Detector`` for one run directory, an ``Ensemble`` for several; ``threshold``
    overrides the pixel and image thresholds (on the ensemble's normalised scale);
    ``score_overrides`` rescore each run (see ``Detector.load``)."""
    if not run_dirs:
        raise RunDirError("no run directory given")
    detectors = [Detector.load(run, score_overrides=score_overrides) for run in run_dirs]
    detector = detectors[0] if len(detectors) == 1 else Ensemble(detectors)
    return detector if threshold is None else detector.with_threshold(threshold)


def as_image_list(images) -> tuple[list[np.ndarray], bool]:
    """``(float32 [h, w, 3] images, whether the input was a list)``: see ``Detector``."""
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


def _batches(items: list, batch_size: int, key=lambda x: x.shape) -> Iterator[list]:
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


# -- streaming over a labelled data set ----------------------------------------------------------


def scan(
    detector: Detector,
    samples: Sequence,
    batch_size: int = 8,
    resolution: int | None = None,
    skipped: list | None = None,
    progress: bool = False,
) -> Iterator[tuple]:
    """Yield ``(sample, image, mask, heatmap, score)`` for each ``ssad.data.readers.TestSample``,
    reading and scoring ``batch_size`` images at a time (memory independent of their number).

    ``resolution``: resize images (and masks, nearest) to that square side first (``None``:
    score them at their own size; see :func:`metrics_resolution`). Unreadable
    images raise ``BadImageError``, or are appended to ``skipped`` when it is a list.
    """
    from ssad.data.readers import read_sample

    bar = progress_bar(len(samples)) if progress else None
    batch: list[tuple] = []

    def flush():
        heatmaps, scores = detector.batch_maps(np.stack([image for _, image, _ in batch]))
        for (sample, image, mask), h, s in zip(batch, heatmaps, scores, strict=True):
            yield sample, image, mask, h, float(s)
        if bar is not None:
            bar.add(len(batch))

    for sample in samples:
        try:
            image, mask = read_sample(sample)
        except BadImageError as e:
            if skipped is None:
                raise
            skipped.append(e)
            if bar is not None:
                bar.add(1)
            continue
        if resolution is not None:
            image = resize(image, resolution, resolution)
            if mask is not None:
                mask = resize(mask[..., None].astype(np.uint8), resolution, resolution, "nearest")
                mask = mask[..., 0] > 0
        if batch and (len(batch) == batch_size or image.shape != batch[0][1].shape):
            yield from flush()
            batch = []
        batch.append((sample, image, mask))
    if batch:
        yield from flush()


def metrics_resolution(detector: Detector) -> int | None:
    """Where pixel metrics are computed: at the square working resolution when the run
    squares its images (masks resized with them, nearest), else at each image's own size."""
    data = detector.config.data
    return data.resolution if mode_of(data) == "square" else None


def has_masks(samples: Sequence) -> bool:
    """Whether pixel metrics apply: some sample has a mask and every sample of a defect class
    (not ``good``, not ``unknown``) has one."""
    return any(s.mask_path is not None for s in samples) and all(
        s.mask_path is not None for s in samples if s.defect not in ("good", "unknown")
    )


def is_defective(sample, mask: np.ndarray | None) -> bool:
    """The image-level label: from the defect folder (MVTec layout), else from the mask."""
    if sample.defect == "unknown":
        return mask is not None and bool(mask.any())
    return sample.defect != "good"


def collect(
    detector: Detector,
    data_dir: str | os.PathLike,
    batch_size: int = 8,
    resolution: int | None = None,
    skipped: list | None = None,
    progress: bool = False,
) -> dict:
    """Score the test images of ``data_dir`` at ``resolution`` (default:
    :func:`metrics_resolution`):
    ``{"labels", "scores", "pixels" (PixelMetrics, or None without masks), "image_auroc",
    "pixel_auroc", "aupro"}``."""
    from ssad.data.readers import test_samples

    samples = test_samples(data_dir)
    pixels = metrics.PixelMetrics() if has_masks(samples) else None
    labels, scores = [], []
    resolution = resolution or metrics_resolution(detector)
    for sample, _, mask, heatmap, score in scan(
        detector, samples, batch_size, resolution, skipped, progress
    ):
        labels.append(is_defective(sample, mask))
        scores.append(score)
        if pixels is not None:
            pixels.update(heatmap, mask)
    with_defects = pixels is not None and pixels.has_defects
    return {
        "labels": labels,
        "scores": scores,
        "pixels": pixels,
        "image_auroc": metrics.auroc(labels, scores),
        "pixel_auroc": pixels.auroc() if with_defects else None,
        "aupro": pixels.aupro() if with_defects else None,
    }


# -- calibration ---------------------------------------------------------------------------------


def calibrate_on_good(
    detector, images, config: Config | None = None, batch_size: int = 8
) -> tuple[dict, GoodStatistics]:
    """``(calibration, statistics)`` from defect-free images alone.

    Fits the good-image statistics of ``score.normalize`` on all ``images``; the thresholds
    are the ``score.pixel_quantile`` quantile of their normalised pixel scores and the
    ``image_quantile`` quantile of their image scores, each half of the images scored with
    statistics fitted on the other half (so the thresholds hold for new good images).

    ``detector``: a ``Detector``, or a Keras model together with ``config``; ``images``: any
    form ``Detector`` accepts (e.g. the held-out good images ``[n, h, w, 3]``).
    """
    if not isinstance(detector, Detector):
        if config is None:
            raise ValueError("calibrate_on_good needs the config with a bare model")
        detector = Detector(detector, config)
    items, _ = as_image_list(images)
    if not items:
        raise DataError("calibrate_on_good needs at least one defect-free image")
    good = _GoodMaps(detector, items, batch_size)
    score_cfg = detector.config.score
    mode = resolve_normalization(score_cfg.normalize, good.xs)
    counts, scores = np.zeros(metrics.N_BINS), []
    for stats, chosen in good.cross_fitted(mode):
        for part in _batches(list(chosen), batch_size, key=lambda i: good.xs[i].shape):
            maps, xs = (np.stack([seq[i] for i in part]) for seq in (good.maps, good.xs))
            heat, s = detector.finish(maps, xs, stats)
            counts += metrics.histogram(heat)
            scores.extend(s.tolist())
    calibration = _calibration(
        "good-quantile",
        pixel_threshold=metrics.histogram_quantile(counts, score_cfg.pixel_quantile),
        image_threshold=float(np.quantile(scores, score_cfg.image_quantile)),
        n_images=len(items),
        normalize=mode,
        score=_plain(detector.config),
    )
    return calibration, good.fit(mode, np.arange(len(items)))


class _GoodMaps:
    """Raw error maps of good images at the working geometry (lists: sizes may differ), and
    statistics fitted on chosen ones."""

    def __init__(self, detector: Detector, items: list[np.ndarray], batch_size: int):
        self.detector = detector
        self.maps: list[np.ndarray] = []
        self.xs: list[np.ndarray] = []
        for batch in _batches(items, batch_size):
            m, x = detector.working_maps(np.stack(batch))
            self.maps.extend(m)
            self.xs.extend(x)
        self._guides = None

    def fit(self, mode: str, chosen: np.ndarray) -> GoodStatistics:
        d = self.detector
        guides = None
        if mode == "structure":
            if self._guides is None:
                self._guides = structure_guides(self.xs, d.sigma)
            guides = [self._guides[i] for i in chosen]
        maps = [self.maps[i] for i in chosen]
        return fit_statistics(mode, maps, guides, d.sigma, d.config.score.std_floor)

    def cross_fitted(self, mode: str) -> Iterator[tuple[GoodStatistics, np.ndarray]]:
        """``(statistics, images scored with them)``: each half with the other's."""
        everything = np.arange(len(self.maps))
        if len(everything) < 2:
            yield self.fit(mode, everything), everything
            return
        halves = (everything[0::2], everything[1::2])
        yield self.fit(mode, halves[1]), halves[0]
        yield self.fit(mode, halves[0]), halves[1]


def resolve_normalization(mode: str, xs: list[np.ndarray]) -> str:
    """``score.normalize`` with ``auto`` resolved on the working-geometry good images ``xs``:
    ``pixel`` for object-like images of one size (``ssad.inspection.stationarity``), else
    ``structure``. ``pixel`` with images of several sizes is a ``ConfigError``."""
    one_size = len({x.shape for x in xs}) == 1
    if mode == "pixel" and not one_size:
        raise ConfigError(
            "score.normalize=pixel needs images of one size at the working geometry "
            "(data.resize=square); use structure or global"
        )
    if mode != "auto":
        return mode
    if not one_size:
        return "structure"
    from ssad.inspection import stationarity

    return "structure" if stationarity(np.stack(xs)).texture_like else "pixel"


def structure_guides(xs: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    """The structure guides of working-geometry images ``xs``, a batch at a time."""
    from ssad.scoring import structure_guide

    guides: list[np.ndarray] = []
    for batch in _batches(list(xs), 16):
        guides.extend(structure_guide(tf.constant(np.stack(batch)), sigma).numpy())
    return guides


def calibrate_f1(
    detector: Detector,
    data_dir: str | os.PathLike,
    batch_size: int = 8,
    skipped: list | None = None,
    progress: bool = False,
) -> dict:
    """F1-optimal thresholds on the labelled images of ``data_dir`` (MVTec layout, or a folder
    with masks, see ``ssad.data.readers.test_samples``), at the working resolution.

    The image threshold maximises image-level F1; the pixel threshold pixel-level F1 when every
    defective image has a mask, else it stays the detector's current one.
    """
    from ssad.data.readers import test_samples

    if not has_masks(test_samples(data_dir)) and detector.calibration is None:
        raise DataError(
            f"{data_dir}: not every defect image has a mask, so F1 cannot choose the pixel "
            "threshold and the run has none yet; use --method good-quantile"
        )
    found = collect(detector, data_dir, batch_size, skipped=skipped, progress=progress)
    labels, scores, pixels = found["labels"], found["scores"], found["pixels"]
    if all(labels) or not any(labels):
        raise DataError(f"{data_dir}: F1 calibration needs both good and defective images")
    f1_image, image_threshold = metrics.best_f1_threshold(labels, scores)
    extra = {"f1_image": f1_image}
    if pixels is not None and pixels.has_defects:
        extra["f1_pixel"], pixel_threshold = pixels.best_f1_threshold()
    else:
        pixel_threshold = detector.pixel_threshold
        extra["pixel_threshold_from"] = detector.calibration.get("method")
    return _calibration(
        "f1",
        pixel_threshold=pixel_threshold,
        image_threshold=image_threshold,
        n_images=len(labels),
        n_defective=int(np.sum(labels)),
        data_dir=str(data_dir),
        normalize=None if detector.statistics is None else detector.statistics.mode,
        score=_plain(detector.config),
        **extra,
    )


def _plain(config: Config) -> dict:
    """The scoring settings a calibration was made for, as stored in its JSON."""
    return config.to_dict()["score"]


def _calibration(method: str, **fields) -> dict:
    from ssad import __version__

    return {"method": method, **fields, "ssad_version": __version__}


def load_calibration(run_dir: str | os.PathLike) -> dict:
    """Read ``RUN_DIR/calibration.json``; ``RunDirError`` names a bad file or key, or a run
    made by another major version of ssad (its ``ssad_version``)."""
    from ssad import __version__

    path = Path(run_dir) / CALIBRATION_FILE
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found ({_HOW_TO_CALIBRATE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from None
    made_by = str(calibration.get("ssad_version", "")) if isinstance(calibration, dict) else ""
    major = made_by.split(".")[0]
    if major.isdigit() and int(major) != int(__version__.split(".")[0]):
        raise VersionError(
            f"{path}: this run was made by ssad {made_by}, which this ssad {__version__} cannot "
            f"read (another major version); train it again, or use ssad {major}.x"
        )
    _check_calibration(calibration, path)
    return calibration


def save_calibration(
    run_dir: str | os.PathLike, calibration: dict, statistics: GoodStatistics | None = None
) -> Path:
    """Write ``calibration`` atomically to ``RUN_DIR/calibration.json`` (and ``statistics`` to
    ``statistics.npz``, or remove a stale one when ``None``) and return the JSON's path."""
    path = Path(run_dir) / CALIBRATION_FILE
    _check_calibration(calibration, path)
    if statistics is None:
        (Path(run_dir) / STATISTICS_FILE).unlink(missing_ok=True)
    else:
        atomic_write_bytes(Path(run_dir) / STATISTICS_FILE, statistics.to_bytes())
    atomic_write_text(path, json.dumps(calibration, indent=2) + "\n")
    return path


def load_statistics(run_dir: str | os.PathLike) -> GoodStatistics | None:
    """The good-image statistics of a run (``None`` when it has none: raw heatmaps)."""
    path = Path(run_dir) / STATISTICS_FILE
    if not path.is_file():
        return None
    return GoodStatistics.from_bytes(path.read_bytes(), str(path))


def save_heldout(run_dir: str | os.PathLike, paths: Sequence) -> None:
    """Record which good images training held out (for rescoring and recalibration)."""
    text = json.dumps({"paths": [str(Path(p).absolute()) for p in paths]}, indent=1)
    atomic_write_text(Path(run_dir) / HELDOUT_FILE, text + "\n")


def read_heldout(run_dir: str | os.PathLike) -> list[np.ndarray]:
    """The held-out good images of a run, each at its own size (float32 in [0, 1])."""
    from ssad.images import read_image

    path = Path(run_dir) / HELDOUT_FILE
    try:
        paths = json.loads(path.read_text(encoding="utf-8"))["paths"]
    except FileNotFoundError:
        raise RunDirError(
            f"{path}: not found, so the run cannot be rescored; recalibrate it on good images "
            "with `ssad calibrate RUN_DIR DATA_DIR --method good-quantile` and the new --set"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise RunDirError(f"{path}: unreadable list of held-out images ({e})") from None
    try:
        return [read_image(p) for p in paths]
    except BadImageError as e:
        raise RunDirError(f"{path}: a held-out image cannot be read ({e})") from None


def _check_calibration(calibration, path: Path) -> None:
    if not isinstance(calibration, dict):
        raise RunDirError(f"{path}: a calibration must be a JSON object")
    for key in ("pixel_threshold", "image_threshold"):
        value = calibration.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise RunDirError(f"{path}: {key!r} must be a finite number, got {value!r}")
