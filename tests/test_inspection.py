import numpy as np
import pytest
from click.testing import CliRunner

from ssad.cli import main
from ssad.config import Config
from ssad.demo_data import make_demo_data
from ssad.images import read_image, write_png
from ssad.inspection import auto_preset, data_stationarity, size_summary, stationarity


def test_maps_equal_brute_force_over_all_windows():
    rng = np.random.default_rng(0)
    images = rng.random((3, 10, 10, 3)).astype(np.float32)
    gray = images.mean(-1)
    windows = np.stack([gray[:, a : a + 5, b : b + 5] for a in range(6) for b in range(6)]).reshape(
        -1, 5, 5
    )
    result = stationarity(images)
    np.testing.assert_allclose(result.mean, windows.mean(0), atol=1e-6)
    np.testing.assert_allclose(result.std, windows.std(0), atol=1e-6)
    np.testing.assert_allclose(
        stationarity((images * 255).astype(np.uint8)).mean, result.mean, atol=3e-3
    )


def discs(n=12, side=64, seed=0):
    """Bright, slightly jittered discs in the middle of a dark background: an object set."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    out = []
    for _ in range(n):
        cy, cx = side / 2 + rng.normal(0, 2, 2)
        disc = np.hypot(yy - cy, xx - cx) < side * 0.3
        out.append(0.1 + 0.7 * disc + rng.normal(0, 0.05, (side, side)))
    return np.clip(np.stack(out), 0, 1)


def disc_folder(folder, n: int):
    """``folder`` holding ``n`` disc images as PNG files."""
    folder.mkdir()
    for i, image in enumerate(discs(n=n)):
        write_png(folder / f"{i}.png", image)
    return folder


def test_centred_objects_are_object_like():
    result = stationarity(discs())
    assert result.score < 0.2 and result.preset == "object"
    assert "object-like" in result.verdict and "per-pixel statistics" in result.verdict


@pytest.mark.parametrize("texture", ["brick", "grass", "gravel"])
def test_demo_textures_are_texture_like(tmp_path, texture):
    root = make_demo_data(tmp_path / texture, texture, n_train=60, n_good=1, n_defect=1, size=64)
    result, skipped = data_stationarity(root, resolution=64)
    assert skipped == [] and result.n_images == 60 and result.mean.shape == (32, 32)
    assert result.score > 0.85 and result.preset == "texture"


def test_cli_prints_verdict_and_saves_maps(tmp_path):
    data = disc_folder(tmp_path / "objects", 4)
    (data / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "maps.png"
    args = ["inspect", str(data), "--resolution", "32", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "broken.png" in result.output
    result = CliRunner().invoke(main, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "4 training images at 32 px" in result.output
    assert "sizes: all 4 images are 64x64; data.resize=auto -> square" in result.output
    assert "use --preset object" in result.output
    assert read_image(out).shape[2] == 3


def test_size_summary_reports_sizes_aspects_and_what_auto_picks(tmp_path):
    for i, (h, w) in enumerate([(50, 100), (80, 40), (120, 120)]):
        write_png(tmp_path / f"{i}.png", np.zeros((h, w, 3)))
    (tmp_path / "broken.png").write_bytes(b"not an image")  # left out
    assert size_summary(tmp_path, 64) == (
        "sizes: 3 different among 3 images, shorter side 40-120 px (median 50), aspect w/h "
        "0.50-2.00; data.resize=auto -> scale: every image resized by 1.28, keeping its aspect"
    )


def test_auto_preset_follows_the_verdict(tmp_path):
    objects = disc_folder(tmp_path / "objects", 4)
    texture = make_demo_data(tmp_path / "brick", "brick", n_train=20, n_good=1, n_defect=1, size=64)
    preset, why = auto_preset(objects)
    assert preset == "object" and why.startswith("preset auto: object (stationarity score 0.")
    assert auto_preset(texture)[0] == "texture"


def test_train_defaults_to_the_auto_preset(tmp_path, monkeypatch):
    data = disc_folder(tmp_path / "objects", 5)
    trained = []

    class Done:  # what ssad.training.train returns, without the training
        skipped = []

        def summary(self):
            return "done"

    def fake_train(cfg, *args, **kwargs):
        trained.append(cfg)
        return Done()

    import ssad.training

    monkeypatch.setattr(ssad.training, "train", fake_train)
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--steps", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "preset auto: object" in result.output
    (cfg,) = trained
    expected = Config.preset("object")
    assert (cfg.data.rotate, cfg.data.flip) == (False, False)
    assert cfg.model == expected.model and cfg.distortion == expected.distortion
    assert cfg.train.stages == expected.train.stages
