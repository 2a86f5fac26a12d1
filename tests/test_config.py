import json

import pytest

from ssad import Config
from ssad.config import PRESETS
from ssad.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trip(tmp_path, name):
    cfg = Config.preset(name)
    path = tmp_path / "config.json"
    cfg.save(path)
    loaded = Config.load(path)
    assert loaded == cfg
    assert hash(loaded) == hash(cfg)  # frozen all the way down


def test_required_presets_exist():
    for name in ("paper", "texture", "object", "tiny"):
        Config.preset(name)
    assert Config.preset("paper").model.width == 1.0
    assert Config.preset("tiny").model.width < Config.preset("texture").model.width


def test_unknown_key_is_named(tmp_path):
    d = Config().to_dict()
    d["train"]["learning_rat"] = 1e-3
    path = tmp_path / "c.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="train.learning_rat"):
        Config.load(path)
    with pytest.raises(ConfigError, match="'modle'"):
        Config.from_dict({"modle": {}})


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="objective"):
        Config().override({"train.objective": 3})
    with pytest.raises(ConfigError, match="multiple of 8"):
        Config().override({"data.resolution": 100})
    with pytest.raises(ConfigError, match="model.bn_momentum"):
        Config().override({"model.bn_momentum": 1.0})
    with pytest.raises(ConfigError, match="model.width"):
        Config().override({"model.width": 0})
    with pytest.raises(ConfigError, match="train.warmup"):
        Config().override({"train.warmup": 1.0})
    with pytest.raises(ConfigError, match="unknown preset"):
        Config.preset("nope")
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON"):
        Config.load(tmp_path / "bad.json")


def test_override():
    cfg = Config.preset("tiny").override(
        {"train.objective": 2, "train.lam": 0.3, "data.flip": None}
    )
    assert cfg.train.objective == 2 and cfg.train.lam == 0.3
    assert cfg.data.flip == Config.preset("tiny").data.flip
    with pytest.raises(ConfigError, match="train.nope"):
        cfg.override({"train.nope": 1})


def test_objective_2_stops_early_by_default_and_paper_preset_trains_as_printed():
    assert Config().train.patience == 0
    assert Config().override({"train.objective": 2}).train.patience == 3
    off = Config().override({"train.objective": 2, "train.early_stopping_patience": 0})
    assert off.train.patience == 0
    paper = Config.preset("paper").train
    assert (paper.learning_rate, paper.norm, paper.schedule) == (1e-4, "l2", "constant")
    assert paper.weight == 0.5
    cpu = Config.preset("object").train
    assert (cpu.learning_rate, cpu.norm, cpu.schedule) == (1e-3, "squared", "constant")


def test_lambda_defaults_by_objective():
    assert Config().train.lam is None and Config().train.weight == 0.9
    assert Config().override({"train.objective": 2}).train.weight == 0.5
    assert Config().override({"train.objective": 2, "train.lam": 0.3}).train.weight == 0.3
    with pytest.raises(ConfigError, match="train.lam"):
        Config().override({"train.lam": 1.5})


def test_score_options_are_checked():
    ok = Config().override({"score.map": "squared+msgms", "score.normalize": "pixel"})
    assert ok.score.map_terms == ("squared", "msgms")
    for key, value, message in (
        ("score.map", "squared+ssim", "score.map"),
        ("score.map", "squared+squared", "score.map"),
        ("score.normalize", "median", "score.normalize"),
        ("score.image", "mean", "score.image"),
        ("score.tta", "rotations", "score.tta"),
        ("score.structure_guide", "output", "input, reconstruction, mean"),
        ("score.image_k", 0, "image_k"),
        ("score.image_map", "sqrt+same", "score.image_map"),
        ("score.image_map", "ssim", "score.image_map"),
    ):
        with pytest.raises(ConfigError, match=message):
            Config().override({key: value})
    with pytest.raises(ConfigError, match="several terms"):
        Config().override({"score.map": "squared+msgms", "score.normalize": "none"})
    with pytest.raises(ConfigError, match="image_map with several terms needs score.image_norm"):
        Config().override({"score.image_map": "sqrt+msgms", "score.image_normalize": "none"})
    own = Config().override({"score.map": "msgms+squared", "score.image_map": "sqrt+msgms"}).score
    assert (own.map_terms, own.image_terms) == (("msgms", "squared"), ("sqrt", "msgms"))
    assert own.all_terms == ("msgms", "squared", "sqrt")  # each map computed once
