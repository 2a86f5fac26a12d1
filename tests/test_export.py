"""The export: a SavedModel that, loaded without ssad, gives the Detector's numbers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from helpers import make_run_dir

from ssad.calibration import calibrate_on_good
from ssad.cli import main
from ssad.detection import Detector
from ssad.errors import RunDirError, SsadError
from ssad.export import export, next_version
from ssad.images import decode_image, encode_png, read_image, read_mask, write_png
from ssad.run import RunDir
from ssad.scoring import anomaly_maps

SIZES = [(48, 40), (72, 96)]  # neither is the tiny preset's working resolution (64)
SERVING_DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"

# Runs in a fresh interpreter: only TensorFlow and NumPy, never ssad.
_LOAD_AND_CALL = """
import sys
import numpy as np
import tensorflow as tf

export_dir, inputs, outputs, *pngs = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
data = np.load(inputs)
result = {}
for i, path in enumerate(pngs):
    images = data[f"images{i}"]
    with open(path, "rb") as f:
        png = f.read()
    by_array = loaded.signatures["serving_default"](images=tf.constant(images))
    by_bytes = loaded.signatures["serving_bytes"](images_bytes=tf.constant([png, png]))
    for key in by_array:
        result[f"array{i}_{key}"] = by_array[key].numpy()
        result[f"bytes{i}_{key}"] = by_bytes[key].numpy()
assert not any(name.split(".")[0] == "ssad" for name in sys.modules), "ssad was imported"
np.savez(outputs, **result)
"""


def _image(height, width, seed):
    """A smooth random picture with a bright blob: heatmaps with both low and high pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = 0.5 + 0.3 * np.sin(6 * xx[..., None] + rng.uniform(0, 6, 3)) * np.cos(4 * yy[..., None])
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.4) ** 2) / 0.01)[..., None]
    return np.clip(base + 0.5 * blob, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """Two PNGs of different sizes; the float images are read back through ssad.images."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (h, w) in enumerate(SIZES):
        paths.append(folder / f"part{i}.png")
        write_png(paths[-1], _image(h, w, i))
    return paths


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, pngs):
    """A tiny untrained run whose thresholds are medians, so masks and labels are mixed."""
    run = make_run_dir(tmp_path_factory.mktemp("run") / "run")
    detector = Detector.load(run)
    heatmaps, scores = detector.maps([read_image(p) for p in pngs])
    pixel = float(np.median(np.concatenate([h.ravel() for h in heatmaps])))
    manual = detector.with_threshold(pixel, float(np.mean(scores)))
    RunDir(run).write_calibration(manual.calibration)
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    return export(run_dir, tmp_path_factory.mktemp("export") / "tire")


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


def test_first_export_is_version_1_with_provenance(exported, run_dir):
    assert exported.name == "1"
    assert (exported / "saved_model.pb").is_file()
    calibration = json.loads((exported / "assets.extra" / "calibration.json").read_text())
    assert calibration == json.loads((run_dir / "calibration.json").read_text())
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.fixture(scope="module")
def served(exported, pngs, tmp_path_factory):
    """Both signatures' outputs, from a fresh interpreter that never imports ssad: for each
    size i, ``array{i}_*`` on [image, image flipped] and ``bytes{i}_*`` on [png, png]."""
    folder = tmp_path_factory.mktemp("served")
    inputs = {}
    for i, path in enumerate(pngs):
        image = read_image(path)
        inputs[f"images{i}"] = np.stack([image, image[::-1, ::-1]])
    np.savez(folder / "inputs.npz", **inputs)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", _LOAD_AND_CALL, str(exported), str(folder / "inputs.npz"),
         str(folder / "out.npz"), *map(str, pngs)],
        check=True, env=env, timeout=300,
    )  # fmt: skip
    return inputs, dict(np.load(folder / "out.npz"))


def test_outside_ssad_both_signatures_match_detector(served, run_dir):
    inputs, out = served
    detector = Detector.load(run_dir)
    for i, (h, w) in enumerate(SIZES):
        images = inputs[f"images{i}"]
        want = detector.predict(images)
        _, _, recon = anomaly_maps(detector.model, images, detector.config.data, detector.sigma)
        assert want["mask"].any() and not want["mask"].all()
        for source, rows in (("array", [0, 1]), ("bytes", [0, 0])):
            got = {key: out[f"{source}{i}_{key}"] for key in want}
            assert got["heatmap"].shape == (2, h, w) and got["mask"].dtype == bool
            np.testing.assert_allclose(got["heatmap"], want["heatmap"][rows], rtol=0, atol=1e-4)
            np.testing.assert_allclose(got["score"], want["score"][rows], rtol=1e-5)
            np.testing.assert_array_equal(got["mask"], want["mask"][rows])
            np.testing.assert_array_equal(got["is_anomalous"], want["is_anomalous"][rows])
            recon_got = out[f"{source}{i}_reconstruction"]
            assert recon_got.shape == (2, h, w, 3)
            np.testing.assert_allclose(recon_got, recon.numpy()[rows], atol=1e-4)


def test_outside_ssad_matches_ssad_predict_files(served, run_dir, pngs, tmp_path):
    _, out = served
    args = ["predict", str(run_dir), *map(str, pngs), "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in json.loads((tmp_path / "scores.json").read_text())}
    labels = set()
    for i, path in enumerate(pngs):
        row = rows[path.name]
        assert row["score"] == pytest.approx(float(out[f"bytes{i}_score"][0]), rel=1e-5)
        assert row["is_anomalous"] == bool(out[f"bytes{i}_is_anomalous"][0])
        labels.add(row["is_anomalous"])
        mask = read_mask(tmp_path / row["mask"])
        np.testing.assert_array_equal(mask, out[f"bytes{i}_mask"][0])
    assert labels == {True, False}


def test_saved_model_cli_lists_both_signatures_with_dynamic_shapes(exported):
    cli = Path(sys.executable).with_name("saved_model_cli")
    text = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name", text, re.S))
    assert set(blocks) >= {"serving_default", "serving_bytes"}

    def shapes(block):
        return dict(
            re.findall(r"\['(\w+)'\] tensor_info:\s+dtype: \w+\s+shape: (\([^)]*\))", block)
        )

    common = {
        "heatmap": "(-1, -1, -1)",
        "score": "(-1)",
        "mask": "(-1, -1, -1)",
        "is_anomalous": "(-1)",
        "reconstruction": "(-1, -1, -1, 3)",
    }
    assert shapes(blocks["serving_default"]) == {"images": "(-1, -1, -1, 3)", **common}
    assert shapes(blocks["serving_bytes"]) == {"images_bytes": "(-1)", **common}


def test_existing_version_is_an_error_not_an_overwrite(exported, run_dir):
    before = (exported / "saved_model.pb").read_bytes()
    result = CliRunner().invoke(
        main, ["export", str(run_dir), str(exported.parent), "--version", "1"]
    )
    assert result.exit_code == 1
    assert "version 1 already exists" in result.output and str(exported) in result.output
    with pytest.raises(SsadError, match="already exists"):
        export(run_dir, exported.parent, version=1)
    assert (exported / "saved_model.pb").read_bytes() == before


def test_bad_run_dir_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(RunDirError, match="missing model.keras"):
        export(tmp_path, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_next_version_follows_the_highest_number(tmp_path):
    assert next_version(tmp_path) == 1
    for name in ("1", "7", "10x", ".11.abc.tmp"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == 8


def test_bytes_decode_like_ssad_images_and_reject_mixed_sizes(loaded):
    rgb = (_image(40, 48, 3) * 255).astype(np.uint8)
    gray_alpha = np.concatenate([rgb[..., :1], np.full_like(rgb[..., :1], 100)], axis=-1)
    encoded = [encode_png(x) for x in (rgb[..., :1], gray_alpha, np.dstack([rgb, rgb[..., :1]]))]
    got = loaded.signatures["serving_bytes"](images_bytes=tf.constant(encoded))
    images = np.stack([decode_image(data) for data in encoded])
    want = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(got["heatmap"].numpy(), want["heatmap"].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
        loaded.signatures["serving_bytes"](
            images_bytes=tf.constant([encoded[0], encode_png(rgb.transpose(1, 0, 2))])
        )


# -- the snippets of docs/serving.md, run against the export ------------------------------------


def _doc_snippet(marker):
    section = SERVING_DOC.read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if marker in b]
    assert len(blocks) == 1, f"docs/serving.md: one python block with {marker!r}"
    return blocks[0]


def test_serving_doc_model_config_parses_as_tf_serving_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    section = SERVING_DOC.read_text()
    text = re.search(r"```\n(model_config_list \{.*?)```", section, re.S).group(1)
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "tire",
        "/models/tire",
        "tensorflow",
    )
    assert "/v1/models/tire:predict" in section and '"$PWD/export/tire:/models/tire"' in section


@pytest.fixture
def doc_cwd(exported, pngs, monkeypatch, tmp_path):
    """A folder laid out as docs/serving.md assumes: export/tire/1 and part.png."""
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "tire").symlink_to(exported.parent)
    (tmp_path / "part.png").write_bytes(pngs[1].read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def want_part(run_dir, pngs):
    return Detector.load(run_dir).predict(read_image(pngs[1]))


def test_serving_doc_rest_request_is_tf_serving_row_format(doc_cwd, loaded, want_part):
    exec(_doc_snippet('"b64"'), {})
    request = json.loads((doc_cwd / "request.json").read_text())
    # TF Serving's row format for a one-input signature: each instance is that input's value,
    # and binary strings are {"b64": base64}.
    import base64

    assert set(request) == {"signature_name", "instances"}
    values = [base64.b64decode(instance["b64"]) for instance in request["instances"]]
    serve = loaded.signatures[request["signature_name"]]
    (name,) = serve.structured_input_signature[1]
    got = serve(**{name: tf.constant(values)})
    np.testing.assert_allclose(got["score"].numpy(), want_part["score"], rtol=1e-5)
    np.testing.assert_array_equal(got["mask"].numpy(), want_part["mask"])


def test_serving_doc_grpc_request_serialises_and_answers(doc_cwd, loaded, want_part, monkeypatch):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    sent = []

    class LocalStub:  # what TF Serving would do with the request, without a server
        def __init__(self, channel):
            pass

        def Predict(self, request, timeout=None):  # noqa: N802 (the gRPC method's name)
            wire = request.SerializeToString()
            sent.append(wire)
            request = predict_pb2.PredictRequest.FromString(wire)
            serve = loaded.signatures[request.model_spec.signature_name]
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = serve(**inputs)
            response = predict_pb2.PredictResponse()
            for key in request.output_filter or outputs:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
            return response

    monkeypatch.setattr(prediction_service_pb2_grpc, "PredictionServiceStub", LocalStub)
    namespace = {}
    exec(_doc_snippet("PredictRequest"), namespace)
    assert len(sent) == 1 and namespace["request"].model_spec.name == "tire"
    np.testing.assert_allclose(namespace["score"], want_part["score"], rtol=1e-5)
    np.testing.assert_array_equal(namespace["mask"], want_part["mask"])


def test_serving_doc_tfsmlayer_reload(doc_cwd, want_part, capsys):
    namespace = {}
    exec(_doc_snippet("TFSMLayer"), namespace)
    outputs = namespace["outputs"]
    np.testing.assert_allclose(outputs["heatmap"].numpy(), want_part["heatmap"], atol=1e-4)
    np.testing.assert_array_equal(outputs["mask"].numpy(), want_part["mask"])
    printed = capsys.readouterr().out.split()
    assert float(printed[0]) == pytest.approx(float(want_part["score"][0]), rel=1e-5)


@pytest.mark.parametrize(
    "score",
    [
        {
            "score.normalize": "pixel",
            "score.image_normalize": "structure",
            "score.structure_guide": "reconstruction",
            "score.map": "squared+msgms",
            "score.image": "mean_max",
        },
        {
            "score.normalize": "structure",
            "score.image_normalize": "pixel",
            "score.image": "topk_mean",
            "score.tta": "flips",
        },
        {"score.normalize": "global", "score.map": "msgms", "score.tta": "dihedral"},
        {
            "score.normalize": "structure",
            "score.image_normalize": "same",
            "score.image_map": "sqrt+msgms",
        },
    ],
)
def test_export_matches_detector_with_every_scoring_option(score, tmp_path):
    run = make_run_dir(tmp_path / "run", overrides=score)
    good = [_image(64, 64, seed) for seed in range(10, 16)]
    calibration, statistics = calibrate_on_good(Detector.load(run), good)
    assert calibration.normalize == score["score.normalize"]
    RunDir(run).write_calibration(calibration, statistics)
    detector = Detector.load(run)
    assert detector.statistics.mode == score["score.normalize"]
    image_mode = score.get("score.image_normalize", "auto")  # auto: pixel (object-like images)
    same = score["score.normalize"]  # own statistics of the heatmap's mode (score.image_map)
    want_mode = {"auto": "pixel", "same": same}.get(image_mode, image_mode)
    assert detector.statistics.for_image.mode == want_mode
    images = np.stack([_image(40, 56, 1), _image(40, 56, 2)[::-1]])
    want = detector.predict(images)
    served = tf.saved_model.load(str(export(run, tmp_path / "export")))
    got = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(got["heatmap"].numpy(), want["heatmap"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["score"].numpy(), want["score"], rtol=1e-5)
    np.testing.assert_array_equal(got["mask"].numpy(), want["mask"])
    np.testing.assert_array_equal(got["is_anomalous"].numpy(), want["is_anomalous"])
