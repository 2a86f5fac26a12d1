import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from ssad.cli import main
from ssad.demo_data import DEFECTS, make_demo_data
from ssad.errors import DataError
from ssad.images import list_images, read_image, read_mask

SMALL = dict(n_train=4, n_good=3, n_defect=2, size=64)


def test_layout_masks_and_drawn_defects(tmp_path):
    root = make_demo_data(tmp_path / "d", "brick", seed=1, **SMALL)
    assert len(list_images(root / "train" / "good")) == 4
    assert len(list_images(root / "test" / "good")) == 3
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted([*DEFECTS, "good"])
    for defect in DEFECTS:
        images = list_images(root / "test" / defect)
        masks = list_images(root / "ground_truth" / defect)
        assert [p.stem + "_mask" for p in images] == [p.stem for p in masks]
        for image_path, mask_path in zip(images, masks, strict=True):
            image, mask = read_image(image_path), read_mask(mask_path)
            assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
            # a visible defect that covers a small part of the picture
            assert 0.001 < mask.mean() < 0.25, defect
            # the photo is gray: only stains add colour, and only in (the soft rim of) their mask
            chroma = image.max(-1) - image.min(-1)
            near = ndimage.binary_dilation(mask, iterations=6)
            assert chroma[~near].max() <= 1.5 / 255, defect  # at most one grey level
            assert (chroma[mask].mean() > 0.02) == (defect == "stain"), defect


def test_deterministic_by_seed_and_refuses_existing_folder(tmp_path):
    a = make_demo_data(tmp_path / "a", "gravel", seed=5, **SMALL)
    b = make_demo_data(tmp_path / "b", "gravel", seed=5, **SMALL)
    c = make_demo_data(tmp_path / "c", "gravel", seed=6, **SMALL)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 4 + 3 + 2 * 2 * len(DEFECTS)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    with pytest.raises(DataError, match="already exists"):
        make_demo_data(a, "gravel", **SMALL)
    with pytest.raises(DataError, match="unknown texture"):
        make_demo_data(tmp_path / "x", "wood")


def test_train_and_test_crops_come_from_different_rows(tmp_path):
    """No training crop equals a test crop: they are cut from disjoint parts of the photo."""
    root = make_demo_data(tmp_path / "d", "grass", seed=0, **SMALL)
    train = [read_image(p) for p in list_images(root / "train" / "good")]
    for p in list_images(root / "test" / "good"):
        test = read_image(p)
        assert min(np.abs(test - t).mean() for t in train) > 0.05


def test_cli(tmp_path):
    result = CliRunner().invoke(main, ["make-demo-data", str(tmp_path / "d"), "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "train/good 120" in result.output and "scratch 15" in result.output
    assert len(list(tmp_path.joinpath("d").rglob("*.png"))) == 120 + 20 + 2 * 4 * 15
