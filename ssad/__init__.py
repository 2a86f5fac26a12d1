"""ssad: visual anomaly detection with self-supervised autoencoders (Keras 3 / TensorFlow).

The data's path through the package: ``images`` (read) -> ``data`` (distort, tf.data) ->
``model`` (SDC autoencoder) -> ``losses`` (eq. 1 and 2) -> ``training`` -> ``detection``
(heatmaps, scores) -> ``metrics`` / ``evaluation`` -> ``export`` (SavedModel). One frozen
``Config`` drives all of it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is first imported


def _import_tensorflow_quietly() -> None:
    """TensorFlow prints start-up notes to fd 2 before its log level applies; hide them."""
    if os.environ.get("SSAD_TF_LOGS"):
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


_import_tensorflow_quietly()

from ssad import data, losses, metrics  # noqa: E402
from ssad.config import Config  # noqa: E402
from ssad.detection import Detector  # noqa: E402
from ssad.model import build_autoencoder  # noqa: E402
from ssad.training import train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Detector",
    "build_autoencoder",
    "data",
    "losses",
    "metrics",
    "train",
    "__version__",
]
