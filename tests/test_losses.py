import keras
import numpy as np
import pytest
import tensorflow as tf

from ssad.config import Config
from ssad.losses import Objective1, Objective2, PlainReconstruction, objective_for, pack_targets


def _np_objective(x, x_hat, m, f, lam, which, norm="l2"):
    """Eq. (1) / (2) written out literally, one image at a time."""
    power = 0.5 if norm == "l2" else 1.0  # ||.||_2 or ||.||_2^2
    out = []
    for xi, xhi, mi, fi in zip(x, x_hat, m, f, strict=True):
        mbar = 1.0 - mi
        first = lam / np.abs(mbar).sum() * (((mbar * (fi - xi)) ** 2).sum()) ** power
        if which == 1:
            second = (1 - lam) / np.abs(mi).sum() * (((mi * (fi - xi)) ** 2).sum()) ** power
            out.append(first + second)
        else:
            d = np.abs(xhi - xi)
            second = (1 - lam) / d.sum() * (((d * (fi - xi)) ** 2).sum()) ** power
            out.append(first - second)
    return np.mean(out)


def _random(seed, shape=(3, 16, 12, 3)):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    m = np.zeros(shape)
    m[:, 4:10, 3:8, :] = rng.random((shape[0], 6, 5, 1))
    x_hat = m * rng.random(shape) + (1 - m) * x
    f = rng.random(shape)
    return tuple(a.astype(np.float32) for a in (x, x_hat, m, f))


@pytest.mark.parametrize("norm", ["l2", "squared"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("which,cls", [(1, Objective1), (2, Objective2)])
def test_matches_numpy(lam, which, cls, norm):
    for seed in range(3):
        x, x_hat, m, f = _random(seed)
        want = _np_objective(x, x_hat, m, f, lam, which, norm)
        y_true = pack_targets(*(tf.constant(a, tf.float32) for a in (x, x_hat, m)))
        got = float(cls(lam=lam, norm=norm)(y_true, tf.constant(f, tf.float32)))
        assert got == pytest.approx(want, abs=1e-5, rel=1e-5)


def test_squared_norm_is_the_mean_squared_error_of_each_region():
    x, x_hat, _, f = _random(7)
    m = np.zeros_like(x)
    m[:, :4] = 1.0  # a hard mask
    y_true = pack_targets(*(tf.constant(a, tf.float32) for a in (x, x_hat, m)))
    got = float(Objective1(lam=0.25, norm="squared")(y_true, tf.constant(f)))
    inside, outside = ((f - x)[:, :4] ** 2).mean(), ((f - x)[:, 4:] ** 2).mean()
    assert got == pytest.approx(0.25 * outside + 0.75 * inside, rel=1e-5)
    with pytest.raises(ValueError, match="norm"):
        Objective1(norm="l1")


@pytest.mark.parametrize("cls", [Objective1, Objective2])
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_finite_for_empty_and_full_masks(cls, fill):
    x, _, _, f = _random(0)
    m = np.full_like(x, fill)
    y_true = tf.constant(pack_targets(x, x, m), tf.float32)  # x_hat == x: ||x_hat - x||_1 == 0
    f = tf.Variable(f, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = cls(lam=0.5)(y_true, f)
    grad = tape.gradient(loss, f)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(grad.numpy()))
    # and at a perfect reconstruction, where the L2 norms are zero
    with tf.GradientTape() as tape:
        perfect = tf.Variable(x, dtype=tf.float32)
        loss = cls(lam=0.5)(y_true, perfect)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(tape.gradient(loss, perfect).numpy()))


def test_objective2_pushes_output_away_inside_mask():
    x, _, _, _ = _random(5)
    m = np.zeros_like(x)
    m[:, 4:10, 3:8, :] = 1.0  # a hard mask: inside it only the second term acts
    x_hat = np.where(m > 0, np.random.default_rng(6).random(x.shape), x).astype(np.float32)
    f = tf.Variable(x + 0.01, dtype=tf.float32)  # close to X everywhere
    y_true = tf.constant(pack_targets(x, x_hat, m), tf.float32)
    with tf.GradientTape() as tape:
        loss = Objective2(lam=0.5)(y_true, f)
    grad = tape.gradient(loss, f).numpy()
    d = np.abs(x_hat - x) > 1e-3
    # gradient descent moves F along -grad: inside the corruption that increases |F - X|
    step = -grad
    away = np.sign(step[d]) == np.sign((f.numpy() - x)[d])
    assert away.mean() > 0.99
    # ... and the loss decreases by a step that moves F away from X there
    f2 = f.numpy() + 0.05 * np.sign(f.numpy() - x) * d
    assert float(Objective2(0.5)(y_true, tf.constant(f2, tf.float32))) < float(loss)


def test_plain_reconstruction_is_mse():
    x, x_hat, m, f = _random(2)
    got = float(PlainReconstruction()(pack_targets(x, x_hat, m), f))
    assert got == pytest.approx(np.mean((f - x) ** 2), rel=1e-5)


@pytest.mark.parametrize("cls", [Objective1, Objective2])
def test_serializable(cls):
    loss = cls(lam=0.25)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.lam == 0.25
    with pytest.raises(ValueError):
        cls(lam=1.5)


@pytest.mark.parametrize("objective, cls, lam", [(1, Objective1, 0.9), (2, Objective2, 0.5)])
def test_objective_for_takes_the_configured_weight(objective, cls, lam):
    train = Config().override({"train.objective": objective, "train.norm": "squared"}).train
    loss = objective_for(train.objective, train.weight, train.norm)
    assert type(loss) is cls and loss.lam == lam and loss.norm == "squared"
    assert type(objective_for(0, train.weight, train.norm)) is PlainReconstruction
    with pytest.raises(ValueError, match="0, 1 or 2"):
        objective_for(3, train.weight, train.norm)
