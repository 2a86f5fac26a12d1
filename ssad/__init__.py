"""ssad: visual anomaly detection with self-supervised autoencoders (Keras 3 / TensorFlow).

The data's path through the package: ``images`` (read) -> ``data`` (distort, tf.data) ->
``model`` (SDC autoencoder) -> ``losses`` (eq. 1 and 2) -> ``training`` (a run directory,
``run``) -> ``detection`` (heatmaps, scores) -> ``calibration`` (thresholds) -> ``scan`` /
``evaluation`` (metrics, report) -> ``export`` (SavedModel). One frozen ``Config`` drives all
of it.

``import ssad`` is light: TensorFlow is imported when a name below is first used, so the
command line answers ``--help`` at once.
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is first imported

__version__ = "0.1.0"

# name -> the module that defines it (a module itself when the names are equal)
_LAZY = {
    "Config": "ssad.config",
    "Detector": "ssad.detection",
    "build_autoencoder": "ssad.model",
    "train": "ssad.training",
    "data": "ssad.data",
    "losses": "ssad.losses",
    "metrics": "ssad.metrics",
}

__all__ = [*_LAZY, "__version__"]


def import_tensorflow_quietly() -> None:
    """Import TensorFlow, hiding the start-up notes it prints to fd 2 before its log level
    applies (``SSAD_TF_LOGS=1`` shows them)."""
    import sys

    if "tensorflow" in sys.modules or os.environ.get("SSAD_TF_LOGS"):
        import tensorflow  # noqa: F401

        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ssad' has no attribute {name!r}")
    import_tensorflow_quietly()
    module = importlib.import_module(_LAZY[name])
    value = module if _LAZY[name] == f"ssad.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])
