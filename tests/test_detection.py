"""Detector and calibration: shapes of heatmaps for any input form, thresholds, run-directory
checks, the calibration's JSON round trip."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from helpers import make_run_dir

from ssad.calibration import calibrate_f1, calibrate_on_good
from ssad.detection import BaseDetector, Detector, Ensemble, load_detector
from ssad.errors import ConfigError, RunDirError, VersionError
from ssad.images import write_png
from ssad.run import Calibration, RunDir
from ssad.statistics import fit_statistics


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("run"), pixel_threshold=0.05, image_threshold=0.1)


@pytest.fixture(scope="module")
def detector(run_dir):
    return Detector.load(run_dir)


def test_heatmap_has_the_input_size_and_score_follows_score_image(detector):
    rng = np.random.default_rng(0)
    odd = rng.random((3, 37, 53, 3)).astype(np.float32)
    heatmap, score = detector.maps(odd, batch_size=2)
    assert heatmap.shape == (3, 37, 53) and score.shape == (3,)
    assert np.all(heatmap >= 0) and heatmap.std() > 0  # no statistics: raw error maps
    working = rng.random((2, 64, 64, 3)).astype(np.float32)  # at the working resolution
    heatmap, score = detector.maps(working)
    assert detector.config.score.image == "topk_mean" and detector.k_px == 8  # 32 px at 256
    top = np.sort(heatmap.reshape(2, -1), axis=1)[:, -64:]  # the mean of the top 8 x 8 pixels
    np.testing.assert_allclose(score, top.mean(axis=1), rtol=1e-5)
    assert np.all(score < heatmap.max(axis=(1, 2)))
    by_max = Detector(detector.model, detector.config.override({"score.image": "max"}))
    np.testing.assert_allclose(by_max.score(working), heatmap.max(axis=(1, 2)), rtol=1e-6)
    assert detector.sigma == pytest.approx(4.0 * 64 / 256)


def test_grayscale_single_and_mixed_size_inputs(detector):
    rng = np.random.default_rng(1)
    gray = rng.random((2, 29, 41)).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    expected = detector.heatmap(rgb)
    assert expected.shape == (2, 29, 41)
    np.testing.assert_allclose(detector.heatmap(gray), expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(detector.heatmap(gray[..., None]), expected, rtol=1e-5, atol=1e-8)
    assert detector.heatmap(gray[0]).shape == (1, 29, 41)
    uint8 = (rgb[0] * 255).round().astype(np.uint8)
    assert detector.heatmap(uint8).shape == (1, 29, 41)
    mixed = [rgb[0], rng.random((64, 64, 3)), gray[1], rng.random((17, 9))]
    out = detector.predict(mixed)
    assert [h.shape for h in out["heatmap"]] == [(29, 41), (64, 64), (29, 41), (17, 9)]
    assert [m.shape for m in out["mask"]] == [(29, 41), (64, 64), (29, 41), (17, 9)]
    np.testing.assert_allclose(out["heatmap"][2], expected[1], rtol=1e-5, atol=1e-8)
    assert out["score"].shape == (4,)


def test_predict_applies_the_stored_and_manual_thresholds(detector):
    rng = np.random.default_rng(2)
    images = rng.random((2, 32, 32, 3)).astype(np.float32)
    out = detector.predict(images)
    np.testing.assert_array_equal(out["mask"], out["heatmap"] >= 0.05)
    np.testing.assert_array_equal(out["is_anomalous"], out["score"] >= 0.1)
    t = float(np.median(out["heatmap"]))
    manual = detector.with_threshold(t).predict(images)
    assert 0.3 < manual["mask"].mean() < 0.7
    np.testing.assert_array_equal(manual["is_anomalous"], out["score"] >= t)
    assert detector.pixel_threshold == 0.05  # the original is unchanged


def test_run_dir_errors_name_what_is_missing(tmp_path, run_dir):
    with pytest.raises(RunDirError, match="no such run directory"):
        Detector.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(RunDirError, match="missing model.keras, calibration.json"):
        Detector.load(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"not a model")
    (tmp_path / "calibration.json").write_text(json.dumps({"pixel_threshold": 0.1}))
    with pytest.raises(RunDirError, match="'image_threshold' is missing"):
        RunDir(tmp_path).read_calibration()
    bad = {"pixel_threshold": 0.1, "image_threshold": float("nan")}
    (tmp_path / "calibration.json").write_text(json.dumps(bad))
    with pytest.raises(RunDirError, match="'image_threshold' must be a finite number"):
        RunDir(tmp_path).read_calibration()
    (tmp_path / "calibration.json").write_text(
        json.dumps({**bad, "image_threshold": 1.0, "ssad_version": "7.0.0"})
    )
    with pytest.raises(VersionError, match="made by ssad 7.0.0"):
        RunDir(tmp_path).read_calibration()
    (tmp_path / "calibration.json").write_text(json.dumps(bad))  # bad, replaceable
    with pytest.raises(RunDirError, match="model.keras: cannot load the model"):
        Detector.load(tmp_path, require_calibration=False)


def test_calibrate_on_good_takes_quantiles(detector, tmp_path):
    rng = np.random.default_rng(3)
    images = rng.random((5, 64, 64, 3)).astype(np.float32)  # at the working resolution
    raw = detector.config.override({"score.normalize": "none", "score.map": "squared"})
    calibration, statistics = calibrate_on_good(Detector(detector.model, raw), images, 2)
    heatmap, score = Detector(detector.model, raw, statistics=statistics).maps(images)
    exact_pixel = np.quantile(heatmap, 0.999)
    assert exact_pixel <= calibration.pixel_threshold <= exact_pixel * 1.001
    assert calibration.image_threshold == pytest.approx(np.quantile(score, 0.99), rel=1e-5)
    assert calibration.method == "good-quantile" and calibration.n_images == 5
    assert calibration.normalize == "none" and calibration.score["normalize"] == "none"
    RunDir(tmp_path).write_calibration(calibration, statistics)
    assert RunDir(tmp_path).read_calibration() == calibration
    assert RunDir(tmp_path).read_statistics().mode == "none"


def test_pixel_calibration_is_cross_fitted_on_good_images(detector):
    rng = np.random.default_rng(5)
    images = rng.random((6, 64, 64, 3)).astype(np.float32)
    cfg = detector.config.override(
        {"score.normalize": "pixel", "score.global_mix": 0.0, "score.image_map": "same"}
    )
    calibration, statistics = calibrate_on_good(Detector(detector.model, cfg), images, 4)
    assert calibration.normalize == "pixel" and statistics.shape == (64, 64)
    plain = Detector(detector.model, cfg)
    maps, xs, recons = plain.working_maps(images)
    sigma = plain.sigma
    np.testing.assert_allclose(
        statistics.mean, fit_statistics("pixel", list(maps), sigma=sigma).mean, rtol=1e-5
    )
    # thresholds: each half scored with the statistics of the other half
    heats, scores = [], []
    halves = (slice(0, None, 2), slice(1, None, 2))
    for scored, fitted in (halves, halves[::-1]):
        stats = fit_statistics("pixel", list(maps[fitted]), sigma=sigma)
        h, s = plain.finish(maps[scored], xs[scored], recons[scored], stats)
        heats.append(h)
        scores.append(s)
    assert calibration.image_threshold == pytest.approx(
        np.quantile(np.concatenate(scores), 0.99), rel=1e-5
    )
    pooled = np.sort(np.concatenate(heats), axis=None)
    kth = pooled[int(np.ceil(0.999 * pooled.size)) - 1]  # the 0.999-quantile sample
    assert kth < calibration.pixel_threshold <= kth + 1e-3 * abs(kth)
    # the normalised heatmap of a good image is centred near 0
    good = Detector(detector.model, cfg, calibration, statistics).heatmap(images)
    assert abs(good.mean()) < 0.05 and 0.5 < good.std() < 1.5


def test_image_score_normalised_on_its_own(detector, tmp_path):
    """score.image_normalize=pixel beside a structure heatmap: the heatmap and pixel threshold
    of a structure-only detector, the scores and image threshold of a pixel-only one (both
    mixed with their global normalisation)."""
    rng = np.random.default_rng(6)
    images = rng.random((6, 64, 64, 3)).astype(np.float32)
    both = detector.config.override(
        {
            "score.normalize": "structure",
            "score.image_normalize": "pixel",
            "score.image_map": "same",
        }
    )
    calibration, statistics = calibrate_on_good(Detector(detector.model, both), images, 4)
    assert (calibration.normalize, calibration.image_normalize) == ("structure", "pixel")
    assert statistics.mode == "structure" and statistics.image.mode == "pixel"
    alone = {}
    assert statistics.image.overall is not None and both.score.global_mix == 0.5
    for mode in ("structure", "pixel"):
        cfg = both.override({"score.normalize": mode, "score.image_normalize": "same"})
        cal, stats = calibrate_on_good(Detector(detector.model, cfg), images, 4)
        assert cal.image_normalize is None and stats.image is None
        alone[mode] = cal, Detector(detector.model, cfg, cal, stats).maps(images)
    heatmap, score = Detector(detector.model, both, calibration, statistics).maps(images)
    np.testing.assert_allclose(heatmap, alone["structure"][1][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(score, alone["pixel"][1][1], rtol=1e-6)
    assert calibration.pixel_threshold == alone["structure"][0].pixel_threshold
    assert calibration.image_threshold == pytest.approx(alone["pixel"][0].image_threshold)
    RunDir(tmp_path).write_calibration(calibration, statistics)
    assert RunDir(tmp_path).read_calibration() == calibration
    assert RunDir(tmp_path).read_statistics().image.shape == (64, 64)
    # an image of another working size than the statistics': a clear error, not a graph's
    native = both.override({"data.resize": "native"})
    with pytest.raises(ConfigError, match=r"scored at 48x40, .* statistics are for 64x64"):
        Detector(detector.model, native, calibration, statistics).maps(images[:1, :40, :48])


@pytest.mark.parametrize("image_normalize", ["same", "pixel"])
def test_image_score_from_maps_of_its_own(detector, image_normalize):
    """score.image_map: the heatmap and pixel threshold of the default maps, the scores and
    image threshold of a detector that uses the image score's maps for everything."""
    rng = np.random.default_rng(7)
    images = rng.random((6, 64, 64, 3)).astype(np.float32)
    settings = {"score.normalize": "structure", "score.image_normalize": image_normalize}
    both = detector.config.override({**settings, "score.image_map": "sqrt+msgms"})
    assert both.score.all_terms == ("squared", "msgms", "sqrt")
    calibration, statistics = calibrate_on_good(Detector(detector.model, both), images, 4)
    own_mode = "structure" if image_normalize == "same" else "pixel"
    assert calibration.image_normalize == statistics.image.mode == own_mode
    assert statistics.image.overall is not None  # mixed like the heatmap
    assert statistics.image.mean.shape[-1] == statistics.mean.shape[-1] == 2
    heat_only = detector.config.override({**settings, "score.image_normalize": "same"})
    image_only = detector.config.override(
        {"score.map": "sqrt+msgms", "score.normalize": own_mode, "score.image_normalize": "same"}
    )
    alone = []
    for cfg in (heat_only, image_only):
        cal, stats = calibrate_on_good(Detector(detector.model, cfg), images, 4)
        alone.append((cal, Detector(detector.model, cfg, cal, stats).maps(images)))
    heatmap, score = Detector(detector.model, both, calibration, statistics).maps(images)
    np.testing.assert_allclose(heatmap, alone[0][1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(score, alone[1][1][1], rtol=1e-5, atol=1e-5)
    assert calibration.pixel_threshold == pytest.approx(alone[0][0].pixel_threshold)
    assert calibration.image_threshold == pytest.approx(alone[1][0].image_threshold, rel=1e-5)
    with pytest.raises(ValueError, match="lack the image score's own"):  # stale statistics
        Detector(detector.model, both, calibration, replace(statistics, image=None)).maps(images)


def test_auto_image_normalisation_is_pixel_for_objects_only(detector):
    from test_inspection import discs

    from ssad.calibration import resolve_normalization

    objects = [np.repeat(x[..., None], 3, axis=-1) for x in discs(n=8)]
    textures = [np.random.default_rng(i).random((64, 64, 3)) for i in range(8)]
    score = detector.config.score
    assert score.normalize == "structure" and score.image_normalize == "auto"  # the defaults
    assert resolve_normalization(score, objects) == ("structure", "pixel")
    assert resolve_normalization(score, textures) == ("structure", None)
    wide = [np.repeat(x, 2, axis=1) for x in objects]  # one size, not square
    assert resolve_normalization(score, wide) == ("structure", "pixel")
    # a working geometry that follows each input's size (data.resize=scale or native): new
    # images may have other sizes than the held-out ones, so no per-pixel statistics
    assert resolve_normalization(score, objects, fixed_size=False) == ("structure", None)
    assert resolve_normalization(score, [*objects, textures[0][:48]]) == ("structure", None)
    pixel_heatmap = detector.config.override({"score.normalize": "pixel"}).score
    assert resolve_normalization(pixel_heatmap, objects) == ("pixel", None)  # the same
    image_global = detector.config.override({"score.image_normalize": "global"}).score
    assert resolve_normalization(image_global, textures) == ("structure", "global")
    sizes = [objects[0], objects[0][:32]]
    with pytest.raises(ConfigError, match="score.image_normalize=pixel needs images of one"):
        resolve_normalization(replace(score, image_normalize="pixel"), sizes)


def test_a_run_of_an_earlier_ssad_scores_as_that_ssad_did(run_dir, tmp_path):
    config = json.loads((run_dir / "config.json").read_text())
    for key in ("image_normalize", "structure_guide", "global_mix", "image_map"):
        del config["score"][key]
    shutil.copytree(run_dir, tmp_path / "old")
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = RunDir(tmp_path / "old").read_config().score
    assert (old.image_normalize, old.structure_guide, old.global_mix) == ("same", "input", 0)
    assert old.image_map == "same" and old.image_terms == old.map_terms
    new = RunDir(run_dir).read_config().score
    assert (new.image_normalize, new.structure_guide, new.global_mix) == ("auto", "mean", 0.5)


def test_calibrate_f1_picks_the_best_image_threshold(detector, tmp_path):
    from ssad.demo_data import make_demo_data

    data = make_demo_data(tmp_path / "data", n_train=1, n_good=3, n_defect=1, size=32)
    calibration, skipped = calibrate_f1(detector, data, batch_size=4)
    assert calibration.method == "f1" and calibration.n_images == 7 and skipped == []
    d = calibration.to_dict()
    assert d["n_defective"] == 4 and d["data_dir"] == str(data)
    assert 0 < d["f1_image"] <= 1 and 0 < d["f1_pixel"] <= 1
    assert calibration.pixel_threshold > 0 and calibration.image_threshold > 0
    assert Calibration.from_dict(json.loads(json.dumps(d))) == calibration  # JSON round trip


def test_ensemble_averages_normalised_heatmaps(run_dir, tmp_path):
    other = make_run_dir(tmp_path / "b", pixel_threshold=0.2, image_threshold=0.4, seed=1)
    ensemble = load_detector([run_dir, other])
    assert isinstance(ensemble, Ensemble) and ensemble.pixel_threshold == 1.0
    assert isinstance(ensemble, BaseDetector) and isinstance(ensemble.detectors[0], BaseDetector)
    a, b = ensemble.detectors
    images = np.random.default_rng(4).random((2, 24, 40, 3)).astype(np.float32)
    expected = (a.heatmap(images) / 0.05 + b.heatmap(images) / 0.2) / 2
    out = ensemble.predict(images)
    np.testing.assert_allclose(out["heatmap"], expected, rtol=1e-5)
    expected_score = (a.score(images) / 0.1 + b.score(images) / 0.4) / 2
    np.testing.assert_allclose(out["score"], expected_score, rtol=1e-5)
    np.testing.assert_array_equal(out["mask"], expected >= 1.0)
    manual = ensemble.with_threshold(2.0)  # the shared interface: thresholds on its scale
    assert manual.pixel_threshold == 2.0 and manual.calibration.method == "manual"
    np.testing.assert_array_equal(manual.predict(images)["mask"], expected >= 2.0)


def test_calibrate_command_stores_thresholds(tmp_path):
    from click.testing import CliRunner

    from ssad.cli import main
    from ssad.demo_data import make_demo_data

    run = make_run_dir(tmp_path / "run")
    result = CliRunner().invoke(main, ["calibrate", str(run), "--threshold", "0.25"])
    assert result.exit_code == 0, result.output
    assert RunDir(run).read_calibration().pixel_threshold == 0.25
    assert RunDir(run).read_calibration().method == "manual"
    data = make_demo_data(tmp_path / "data", n_train=1, n_good=3, n_defect=1, size=32)
    args = ["calibrate", str(run), str(data), "--method", "good-quantile"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    calibration = RunDir(run).read_calibration()
    assert calibration.method == "good-quantile" and calibration.n_images == 3
    result = CliRunner().invoke(main, ["calibrate", str(run)])  # no held-out images
    assert result.exit_code == 1 and "held-out" in result.output


def test_calibrate_without_data_refits_on_the_held_out_images(tmp_path):
    """What a run whose statistics an earlier ssad wrote is told to do."""
    import io

    from click.testing import CliRunner

    from ssad.cli import main

    rng = np.random.default_rng(3)
    heldout = [tmp_path / f"good{i}.png" for i in range(4)]
    for path in heldout:
        write_png(path, rng.random((64, 64, 3)).astype(np.float32))
    run = make_run_dir(tmp_path / "run", heldout=heldout)
    buffer = io.BytesIO()  # hard-binned structure statistics, as an earlier ssad wrote them
    np.savez(buffer, mode=np.array("structure"), mean=np.zeros((16, 1)), std=np.ones((16, 1)),
             edges=np.zeros((1, 15)))  # fmt: skip
    RunDir(run).statistics_path.write_bytes(buffer.getvalue())
    with pytest.warns(UserWarning, match="run `ssad calibrate RUN` to refit them; refitting"):
        refitted = Detector.load(run)  # still usable: refitted in memory
    assert refitted.statistics.quantiles.shape == (1, 17)
    result = CliRunner().invoke(main, ["calibrate", str(run)])
    assert result.exit_code == 0, result.output
    calibration = RunDir(run).read_calibration()
    assert calibration.method == "good-quantile" and calibration.n_images == 4
    stored = Detector.load(run)  # no warning now
    np.testing.assert_array_equal(stored.statistics.mean, refitted.statistics.mean)
    assert stored.pixel_threshold == refitted.pixel_threshold


def test_a_calibration_from_before_the_scoring_options_keeps_its_scoring(tmp_path):
    run = make_run_dir(tmp_path / "run")
    calibration = json.loads((run / "calibration.json").read_text())
    del calibration["score"]  # as ssad 0.1 wrote it: thresholds of raw maxima
    (run / "calibration.json").write_text(json.dumps(calibration))
    score = Detector.load(run).config.score
    assert (score.map, score.normalize, score.image) == ("squared", "none", "max")
