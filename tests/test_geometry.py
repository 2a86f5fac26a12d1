"""Images of any size: the working geometry (square, scale, native), training crops inside
each image, tiled reconstruction, and a run on crops of varied size and aspect end to end."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssad.config import Config, DataConfig
from ssad.data import train_dataset
from ssad.data.geometry import resolve_resize, to_working, working_size
from ssad.data.readers import load_working_images
from ssad.detection import Detector
from ssad.errors import BadImageError, ConfigError
from ssad.images import read_image, write_png
from ssad.model import build_autoencoder, receptive_radius
from ssad.scoring import _edge_weights, _tile_starts, reconstruct

SIZES = [(100, 37), (37, 100), (64, 64), (151, 203), (33, 600)]


@pytest.mark.parametrize(
    "data",
    [
        DataConfig(resolution=64, resize="square"),
        DataConfig(resolution=64, resize="scale", scale=0.37),
        DataConfig(resolution=64, resize="scale", scale=1.5),
        DataConfig(resolution=64, resize="native"),
        DataConfig(resolution=64),  # unresolved auto: square
    ],
)
def test_numpy_and_graph_give_the_same_working_size(data):
    for h, w in SIZES:
        got = to_working(tf.zeros((1, h, w, 3)), data).shape[1:3]
        assert tuple(got) == working_size(h, w, data)
    if data.resize == "scale":
        h, w = working_size(200, 100, data)
        assert h / w == pytest.approx(2.0, abs=0.03)  # the aspect is kept


def test_auto_is_square_for_one_size_and_scale_from_the_median_shorter_side():
    data = DataConfig(resolution=128)
    assert resolve_resize(data, [(300, 400)] * 3) == DataConfig(resolution=128, resize="square")
    varied = resolve_resize(data, [(100, 300), (200, 150), (400, 256)])
    assert (varied.resize, varied.scale) == ("scale", 128 / 150)
    fixed = resolve_resize(DataConfig(resize="scale", scale=0.5), [(100, 300), (200, 150)])
    assert fixed.scale == 0.5  # a factor given (or saved in a run) is kept
    native = resolve_resize(DataConfig(resize="native", scale=2.0), [(10, 10), (20, 20)])
    assert (native.resize, native.scale) == ("native", None)
    with pytest.raises(ConfigError, match="data.resize"):
        DataConfig(resize="stretch")


def test_working_images_keep_their_aspect_and_tiny_ones_are_named(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(144, 72), (96, 240), (96, 96)]):
        paths.append(tmp_path / f"img{i}.png")
        write_png(paths[-1], rng.random((h, w, 3)))
    images, data, kept, skipped = load_working_images(paths, DataConfig(resolution=48))
    assert (data.resize, data.scale) == ("scale", 0.5)  # median shorter side 96 -> 48
    assert [x.shape for x in images] == [(72, 36, 3), (48, 120, 3), (48, 48, 3)]
    assert kept == paths and skipped == [] and images[0].dtype == np.uint8
    np.testing.assert_allclose(
        images[1] / 255.0, tf.image.resize(read_image(paths[1]), (48, 120), antialias=True),
        atol=0.5 / 255 + 1e-6,
    )  # fmt: skip
    tiny = tmp_path / "tiny.png"
    write_png(tiny, rng.random((20, 300, 3)))
    with pytest.raises(BadImageError, match=r"tiny.png: too small: 300x20 pixels.*at least 32"):
        load_working_images([*paths, tiny], DataConfig(resize="native"))
    _, _, kept, skipped = load_working_images([*paths, tiny], DataConfig(resize="native"), "skip")
    assert kept == paths and [s.path for s in skipped] == [str(tiny)]


def test_training_crops_of_images_of_several_sizes_stay_inside_each_image():
    # each image is one constant value: a crop that crossed a border (or padded) would mix
    sizes = [(40, 90), (130, 48), (64, 64), (200, 41)]
    images = [np.full((h, w, 3), 50 * (i + 1), np.uint8) for i, (h, w) in enumerate(sizes)]
    cfg = Config.preset("tiny")
    ds = train_dataset(images, cfg, 40, 4, seed=3, distort=False)
    seen = set()
    for x_hat, _ in ds.take(6):
        x = x_hat.numpy()
        assert x.shape == (4, 40, 40, 3)
        for crop in x:
            assert crop.min() == crop.max()
            seen.add(round(float(crop[0, 0, 0]) * 255))
    assert seen == {50, 100, 150, 200}
    with pytest.raises(ValueError, match=r"\[8, 40\]"):
        train_dataset(images, cfg, 48, 4)


def test_tiles_give_the_whole_image_result_where_the_receptive_field_fits():
    cfg = Config.preset("tiny").override({"model.sdc_blocks": 1, "model.dilation_rates": [1, 2]})
    keras.utils.set_random_seed(1)
    model = build_autoencoder(cfg.model)
    assert receptive_radius(model) == 96  # <= the margin of 768-px tiles (768 / 8)
    x = tf.random.stateless_uniform((2, 61, 1601, 3), seed=(1, 2))
    starts = _tile_starts(1608, 768, 768 - 3 * 96)
    assert starts == [0, 480, 840]  # three tiles along the width, offsets multiples of 8
    whole = reconstruct(model, x).numpy()
    tiled = reconstruct(model, x, tile=768).numpy()  # a static size: the tiles unrolled
    assert tiled.shape == whole.shape == (2, 61, 1601, 3)
    np.testing.assert_allclose(tiled, whole, atol=2e-5)
    # sizes known only at run time: the same tiles in a loop
    looped = tf.function(lambda t: reconstruct(model, t, tile=768), autograph=False)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    np.testing.assert_allclose(looped.get_concrete_function(spec)(x).numpy(), tiled, atol=1e-6)


@pytest.mark.parametrize("length", [64, 100, 136, 200, 1000, 1608])
def test_tile_starts_are_the_same_static_or_as_a_tensor(length):
    # (the tensor form avoids negative floor division, which ONNX would truncate)
    static = _tile_starts(length, min(64, length), 40)
    assert static[0] == 0 and static[-1] == length - min(64, length)
    assert all(b - a <= 40 for a, b in zip(static, static[1:], strict=False))
    tensor = _tile_starts(tf.constant(length), tf.constant(min(64, length)), 40)
    assert tensor.numpy().tolist() == static


def test_blend_weights_vanish_near_inner_edges_and_cover_every_pixel():
    # a 1000-px axis in tiles of 256 with margin 16 and ramp 32
    starts = _tile_starts(1000, 256, 256 - 2 * 16 - 32)
    total = np.zeros(1000)
    for s in starts:
        w = _edge_weights(tf.constant(s), 256, 1000, 16, 32).numpy()
        assert w[48:-48].min() == 1.0
        if s > 0:
            assert (w[:16] == 0).all() and w[17:48].min() > 0
        else:
            assert (w[:48] == 1).all()  # no ramp at the image's own border
        if s + 256 < 1000:
            assert (w[-16:] == 0).all()
        assert np.all(np.diff(w[:128]) >= 0)  # a smooth rise, no step
        total[s : s + 256] += w
    assert total.min() > 0.5


@pytest.fixture(scope="module")
def varied_run(tmp_path_factory):
    """A tiny run on the varied demo crops (square would squash them)."""
    from ssad.demo_data import make_demo_data
    from ssad.training import train

    root = tmp_path_factory.mktemp("varied")
    data = make_demo_data(
        root / "brick", "brick", n_train=10, n_good=3, n_defect=1, size=96, shapes="varied"
    )
    cfg = Config.preset("tiny").override({"data.resolution": 96, "train.steps": 4})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, data, root / "run", verbose=0)
    return data, root / "run", result, [str(w.message) for w in caught]


def test_a_varied_data_set_trains_at_one_scale_and_is_scored_at_its_own_size(varied_run):
    data, run, result, _ = varied_run
    saved = json.loads((run / "config.json").read_text())["data"]
    from ssad.images import image_size

    shorter = [min(image_size(p)) for p in sorted((data / "train" / "good").iterdir())]
    assert saved["resize"] == "scale"
    assert saved["scale"] == pytest.approx(96 / np.median(shorter))
    detector = Detector.load(run)
    image = read_image(sorted((data / "test" / "crack").iterdir())[0])
    assert image.shape[0] != image.shape[1]
    heatmap, score = detector.maps(image)
    assert heatmap.shape == (1, *image.shape[:2]) and np.isfinite(score).all()
    assert detector.calibration.normalize == "structure"  # positions mean nothing here
    with pytest.raises(ConfigError, match="pixel needs images of one size"):
        Detector.load(run, score_overrides={"score.normalize": "pixel"})


def test_stage_crops_are_clipped_to_the_smallest_image_with_a_warning(varied_run):
    _, run, result, messages = varied_run
    stage2 = [m for m in messages if m.startswith("stage 2")]
    assert len(stage2) == 1 and "crops instead" in stage2[0]
    crop = int(stage2[0].split("trains on ")[1].split("px")[0])
    history = json.loads((run / "history.json").read_text())
    assert {h["crop"] for h in history} == {32, crop} and crop % 8 == 0 and crop < 96


def test_evaluation_of_a_scaled_run_is_at_each_image_own_size(varied_run, tmp_path):
    from ssad.evaluation import evaluate

    data, run, _, _ = varied_run
    result, _ = evaluate(run, data, tmp_path / "eval")
    assert result["resolution"] is None and result["n_images"] == 3 + 4
    assert 0 <= result["pixel_auroc"] <= 1
    html = (tmp_path / "eval" / "index.html").read_text()
    assert "metrics at each image&#x27;s own size" in html or "own size" in html


def test_export_of_a_scaled_run_matches_the_detector_in_tiles(varied_run, tmp_path):
    # untiled parity on non-square inputs is tests/test_export.py's; here a scale run, tiled
    import shutil

    from ssad.export import export
    from ssad.run import RunDir

    detector = Detector.load(varied_run[1], score_overrides={"score.tile": 64})
    run = shutil.copytree(varied_run[1], tmp_path / "rescored")  # exported as now scored
    detector.config.save(run / "config.json")
    RunDir(run).write_calibration(detector.calibration, detector.statistics)
    loaded = tf.saved_model.load(str(export(run, tmp_path / "export")))
    rng = np.random.default_rng(0)
    for h, w in [(200, 152), (75, 310)]:
        images = rng.random((2, h, w, 3)).astype(np.float32)
        want = detector.predict(images)
        got = loaded.signatures["serving_default"](images=tf.constant(images))
        assert got["heatmap"].shape == (2, h, w)
        np.testing.assert_allclose(got["heatmap"].numpy(), want["heatmap"], atol=1e-4)
        np.testing.assert_allclose(got["score"].numpy(), want["score"], rtol=1e-5)
        np.testing.assert_array_equal(got["mask"].numpy(), want["mask"])


@pytest.mark.parametrize(
    "shape, size",
    [((2, 37, 53, 3), (64, 64)), ((1, 301, 199, 3), (64, 40)), ((1, 64, 64, 1), (64, 64)),
     ((1, 5, 700, 3), (3, 41)), ((1, 128, 96, 3), (1, 7))],
)  # fmt: skip
def test_matmul_resize_gives_tensorflow_antialiased_resize(shape, size):
    from ssad.data.geometry import resize_antialiased

    x = np.random.default_rng(0).random(shape).astype(np.float32)
    want = tf.image.resize(x, size, method="bilinear", antialias=True).numpy()
    got = resize_antialiased(tf.constant(x), tf.constant(size)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-6)
