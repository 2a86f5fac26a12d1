"""The paper's training objectives, eq. (1) and (2), as Keras losses for ``model.fit``.

How X, X-hat and M reach the loss: the model's input is the corrupted image X-hat, its output
is F = F(X-hat), and ``y_true = pack_targets(X, X_hat, M)`` concatenates the three along the
channel axis (``[b, h, w, 9]``). ``ssad.data.train_dataset`` yields ``(X_hat, y_true)`` pairs.

Norms are per image over all pixels and channels; the per-image losses are averaged over the
batch. Every division is guarded, so an empty or full mask gives a finite loss, and the L2
norm has a finite gradient at zero.
"""

from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-8


def pack_targets(x, x_hat, mask):
    """``y_true`` for the objectives: original ``x``, corrupted ``x_hat`` and ``mask``, each
    ``[b, h, w, 3]``, concatenated to ``[b, h, w, 9]``."""
    return ops.concatenate([x, x_hat, mask], axis=-1)


def unpack_targets(y_true):
    """Inverse of :func:`pack_targets`: ``(x, x_hat, mask)``."""
    return y_true[..., 0:3], y_true[..., 3:6], y_true[..., 6:9]


def _l1(t):
    return ops.sum(ops.abs(t), axis=(1, 2, 3))


def _l2(t):
    """Per-image L2 norm (not squared) with a finite gradient at zero; NaN stays NaN."""
    s = ops.sum(ops.square(t), axis=(1, 2, 3))
    zero = s == 0
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, s)))


def _l2_squared(t):
    return ops.sum(ops.square(t), axis=(1, 2, 3))


def _ratio(num, den):
    return num / ops.maximum(den, _EPS)


_NORMS = {"l2": _l2, "squared": _l2_squared}


class _Objective(keras.losses.Loss):
    def __init__(self, lam: float = 0.5, norm: str = "l2", name: str | None = None, **kwargs):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {', '.join(_NORMS)}, got {norm!r}")
        super().__init__(name=name or type(self).__name__.lower(), **kwargs)
        self.lam = float(lam)
        self.norm = norm
        self._norm = _NORMS[norm]

    def get_config(self):
        return {**super().get_config(), "lam": self.lam, "norm": self.norm}

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        f = ops.cast(y_pred, "float32")
        x, x_hat, m = unpack_targets(y_true)
        return self.objective(x, x_hat, m, f)


@keras.saving.register_keras_serializable(package="ssad")
class Objective1(_Objective):
    """Eq. (1): L = lam/|M'|_1 * ||M' (F - X)||_2 + (1 - lam)/|M|_1 * ||M (F - X)||_2,
    with M' = 1 - M. Reconstruct the normal part, restore the corrupted part."""

    def objective(self, x, x_hat, m, f):
        m_bar = 1.0 - m
        err = f - x
        normal = _ratio(self._norm(m_bar * err), _l1(m_bar))
        restored = _ratio(self._norm(m * err), _l1(m))
        return self.lam * normal + (1.0 - self.lam) * restored


@keras.saving.register_keras_serializable(package="ssad")
class Objective2(_Objective):
    """Eq. (2): L = lam/|M'|_1 * ||M' (F - X)||_2 - (1 - lam)/|D|_1 * ||D (F - X)||_2,
    with D = |X_hat - X|. Reconstruct the normal part, push the output away from X where the
    input was corrupted (needs early stopping)."""

    def objective(self, x, x_hat, m, f):
        m_bar = 1.0 - m
        d = ops.abs(x_hat - x)
        err = f - x
        normal = _ratio(self._norm(m_bar * err), _l1(m_bar))
        amplified = _ratio(self._norm(d * err), _l1(d))
        return self.lam * normal - (1.0 - self.lam) * amplified


@keras.saving.register_keras_serializable(package="ssad")
class PlainReconstruction(keras.losses.Loss):
    """Mean squared error between F and X: the ordinary-autoencoder baseline."""

    def __init__(self, name: str = "plain_reconstruction", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        x, _, _ = unpack_targets(ops.cast(y_true, "float32"))
        return ops.mean(ops.square(ops.cast(y_pred, "float32") - x), axis=(1, 2, 3))


def objective_for(objective: int, lam: float, norm: str) -> keras.losses.Loss:
    """The loss for ``TrainConfig.objective``: 1, 2, or 0 (plain autoencoder, which ignores
    ``lam`` and ``norm``); pass ``TrainConfig.weight`` as ``lam``."""
    if objective == 1:
        return Objective1(lam=lam, norm=norm)
    if objective == 2:
        return Objective2(lam=lam, norm=norm)
    if objective == 0:
        return PlainReconstruction()
    raise ValueError(f"objective must be 0, 1 or 2, got {objective}")
