"""A trained run on disk: ``RunDir`` is the only code that knows the run directory's layout.

::

    model.keras        final model (float32, loads in safe mode)
    config.json        the effective Config (geometry and precision resolved)
    history.json       one row per epoch: stage, step, loss, val_loss, repair probe, seconds
    heldout.json       the good images training held out (rescoring and recalibration)
    calibration.json   thresholds and what they were made for (:class:`Calibration`)
    statistics.npz     good-image statistics of the heatmap and image score (``ssad.statistics``)
    logs/              TensorBoard: a folder of scalars per stage, images/ samples
    checkpoints/       last.npz: weights, optimizer state and progress, for resuming
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssad.config import Config
from ssad.errors import BadImageError, RunDirError, VersionError
from ssad.files import atomic_path, atomic_write_bytes, atomic_write_text

# Scoring options a config.json of an earlier ssad lacks, and what that ssad did instead.
EARLIER_SCORING = {
    "score.map": "squared",
    "score.image_map": "same",
    "score.image": "max",
    "score.image_normalize": "same",
    "score.structure_guide": "input",
    "score.global_mix": 0.0,
}
HOW_TO_CALIBRATE = "make one with `ssad calibrate RUN_DIR DATA_DIR` or pass --threshold"


@dataclass(frozen=True)
class Calibration:
    """A detector's thresholds and how they were made (``calibration.json``).

    A pixel is anomalous when its heatmap value is >= ``pixel_threshold``, an image when its
    score is >= ``image_threshold``. ``score``: the ``score.*`` settings the thresholds hold
    for (``None``: made before the scoring options, for raw maxima); ``normalize`` and
    ``image_normalize``: what ``score.normalize`` and ``score.image_normalize`` resolved to
    (the second only when the image score has statistics of its own); ``details``: what the
    method adds (``n_defective``, ``f1_image``, ``data_dir``, ...), stored beside the rest.
    """

    pixel_threshold: float
    image_threshold: float
    method: str
    n_images: int | None = None
    normalize: str | None = None
    image_normalize: str | None = None
    score: dict | None = None
    details: dict = field(default_factory=dict)
    ssad_version: str = ""

    def __post_init__(self):
        for key in ("pixel_threshold", "image_threshold"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value))
            ):
                raise RunDirError(f"calibration {key!r} must be a finite number, got {value!r}")
        if not self.ssad_version:
            from ssad import __version__

            object.__setattr__(self, "ssad_version", __version__)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        details = d.pop("details")
        version = d.pop("ssad_version")
        return {**d, **details, "ssad_version": version}

    @classmethod
    def from_dict(cls, d, source: str = "calibration") -> Calibration:
        """Parse ``d`` (a ``calibration.json``); ``RunDirError`` names a bad key or value,
        ``VersionError`` a calibration of another major version of ssad."""
        from ssad import __version__

        if not isinstance(d, dict):
            raise RunDirError(f"{source}: a calibration must be a JSON object")
        made_by = str(d.get("ssad_version", ""))
        major = made_by.split(".")[0]
        if major.isdigit() and int(major) != int(__version__.split(".")[0]):
            raise VersionError(
                f"{source}: this run was made by ssad {made_by}, which this ssad {__version__} "
                f"cannot read (another major version); train it again, or use ssad {major}.x"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"details"}
        missing = [k for k in ("pixel_threshold", "image_threshold") if k not in d]
        if missing:
            raise RunDirError(f"{source}: {missing[0]!r} is missing")
        fields = {k: v for k, v in d.items() if k in known}
        fields.setdefault("method", "unknown")
        try:
            return cls(**fields, details={k: v for k, v in d.items() if k not in known})
        except RunDirError as e:
            raise RunDirError(f"{source}: {e}") from None


class RunDir:
    """The run directory at ``path`` (see the module docstring for its files)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.model_path = self.path / "model.keras"
        self.config_path = self.path / "config.json"
        self.history_path = self.path / "history.json"
        self.heldout_path = self.path / "heldout.json"
        self.calibration_path = self.path / "calibration.json"
        self.statistics_path = self.path / "statistics.npz"
        self.logs_path = self.path / "logs"
        self.checkpoint_path = self.path / "checkpoints" / "last.npz"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- reading -------------------------------------------------------------------------------
    def check(self, calibration: bool = True) -> None:
        """``RunDirError`` naming what a usable run lacks (the calibration only if asked)."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory")
        needed = [self.model_path, self.config_path] + ([self.calibration_path] * calibration)
        missing = [p.name for p in needed if not p.is_file()]
        if missing:
            hint = f" ({HOW_TO_CALIBRATE})" if missing == [self.calibration_path.name] else ""
            raise RunDirError(
                f"{self.path}: incomplete run directory, missing {', '.join(missing)}{hint}"
            )

    def is_finished(self) -> bool:
        """Whether training wrote its final model and calibration here."""
        return self.model_path.is_file() and self.calibration_path.is_file()

    def read_config(self) -> Config:
        """The run's config; scoring options it predates read as what that ssad did."""
        return Config.load(self.config_path, missing=EARLIER_SCORING)

    def load_model(self):
        """The trained Keras model, loaded in safe mode."""
        import keras

        try:
            return keras.models.load_model(self.model_path, safe_mode=True, compile=False)
        except Exception as e:  # Keras raises many types for a damaged or foreign file
            raise RunDirError(f"{self.model_path}: cannot load the model ({e})") from e

    def read_calibration(self) -> Calibration | None:
        """The stored :class:`Calibration` (``None`` when there is none)."""
        path = self.calibration_path
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path}: not valid JSON ({e})") from None
        return Calibration.from_dict(d, str(path))

    def read_statistics(self):
        """The good-image statistics (``None`` when the run has none: raw heatmaps)."""
        from ssad.statistics import GoodStatistics

        path = self.statistics_path
        return GoodStatistics.from_bytes(path.read_bytes(), str(path)) if path.is_file() else None

    def read_history(self) -> list[dict]:
        """One row per epoch (empty when training has not finished an epoch)."""
        if not self.history_path.is_file():
            return []
        return json.loads(self.history_path.read_text(encoding="utf-8"))

    def read_heldout(self) -> list[np.ndarray]:
        """The held-out good images of the run, each at its own size (float32 in [0, 1])."""
        from ssad.images import read_image

        path = self.heldout_path
        try:
            paths = json.loads(path.read_text(encoding="utf-8"))["paths"]
        except FileNotFoundError:
            raise RunDirError(
                f"{path}: not found, so the run cannot be rescored; recalibrate it on good "
                "images with `ssad calibrate RUN_DIR DATA_DIR --method good-quantile` and the "
                "new --set"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise RunDirError(f"{path}: unreadable list of held-out images ({e})") from None
        try:
            return [read_image(p) for p in paths]
        except BadImageError as e:
            raise RunDirError(f"{path}: a held-out image cannot be read ({e})") from None

    def read_state(self):
        """The checkpoint's ``RunState`` (``None`` without a checkpoint)."""
        from ssad.checkpoint import read_state

        return read_state(self.checkpoint_path) if self.checkpoint_path.is_file() else None

    def provenance(self) -> list[Path]:
        """The files that say how the run scores: config, calibration and statistics."""
        files = (self.config_path, self.calibration_path, self.statistics_path)
        return [p for p in files if p.is_file()]

    # -- writing -------------------------------------------------------------------------------
    def prepare(
        self, config: Config, resume: bool, may_change: Sequence[str] = (), write: bool = True
    ) -> None:
        """Create the folder and save ``config``; with ``resume`` and a checkpoint, refuse a
        config that differs from the saved one in more than the dotted keys ``may_change``.
        Without ``resume``, earlier checkpoints and logs are removed. ``write=False`` (a
        worker that is not the chief): the check only."""
        if resume and self.checkpoint_path.exists() and self.config_path.exists():
            old, new = self.read_config().to_dict(), config.to_dict()
            for key in may_change:
                section, _, name = key.partition(".")
                old[section].pop(name, None), new[section].pop(name, None)
            changed = [
                f"{section}.{k}" for section in new for k in new[section]
                if old[section].get(k) != new[section][k]
            ]  # fmt: skip
            if changed:
                raise RunDirError(
                    f"{self.config_path}: the run there used other settings "
                    f"({', '.join(changed)}); resume with the same options or choose another --out"
                )
        if not write:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.rmtree(self.checkpoint_path.parent, ignore_errors=True)
            shutil.rmtree(self.logs_path, ignore_errors=True)
        self.checkpoint_path.parent.mkdir(exist_ok=True)
        self.logs_path.mkdir(exist_ok=True)
        config.save(self.config_path)

    def write_model(self, model) -> None:
        with atomic_path(self.model_path) as tmp:
            model.save(tmp)

    def write_config(self, config: Config) -> None:
        config.save(self.config_path)

    def write_history(self, history: list[dict]) -> None:
        atomic_write_text(self.history_path, json.dumps(history, indent=1) + "\n")

    def write_heldout(self, paths: Sequence[str | os.PathLike]) -> None:
        """Record which good images training held out (for rescoring and recalibration)."""
        text = json.dumps({"paths": [str(Path(p).absolute()) for p in paths]}, indent=1)
        atomic_write_text(self.heldout_path, text + "\n")

    def write_calibration(self, calibration: Calibration, statistics=None) -> Path:
        """Write ``calibration`` (and ``statistics``, or remove a stale file when ``None``);
        returns the calibration's path."""
        if statistics is None:
            self.statistics_path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(self.statistics_path, statistics.to_bytes())
        text = json.dumps(calibration.to_dict(), indent=2) + "\n"
        atomic_write_text(self.calibration_path, text)
        return self.calibration_path


def untrained_run(
    path: str | os.PathLike,
    config: Config,
    pixel_threshold: float,
    image_threshold: float,
    heldout: Sequence[str | os.PathLike] | None = None,
    seed: int = 0,
) -> RunDir:
    """A run directory with an untrained model of ``config`` and manual thresholds: for tests
    and benchmarks of the detection path that need no training. With ``heldout`` (image
    files) the run can be rescored."""
    import keras

    from ssad.model import build_autoencoder

    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    run.write_model(build_autoencoder(config.model))
    run.write_config(config)
    score = config.to_dict()["score"]
    run.write_calibration(Calibration(pixel_threshold, image_threshold, "manual", 0, score=score))
    if heldout is not None:
        run.write_heldout(heldout)
    return run
