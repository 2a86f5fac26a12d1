"""ONNX and OpenVINO exports: the whole detector converts, loads without ssad and agrees with
``Detector``; ``Detector.load`` and ``ssad predict`` take an export."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_run_dir

from ssad.calibration import calibrate_on_good
from ssad.cli import main
from ssad.detection import Detector
from ssad.errors import SsadError
from ssad.export import CONVERTERS, MODEL_FILES, export
from ssad.images import read_image, write_png
from ssad.run import RunDir
from ssad.runtimes import ExportedDetector

FORMATS = {"onnx": ("tf2onnx", "onnxruntime"), "openvino": ("openvino",)}

# Run in a fresh interpreter: only the runtime and NumPy, never ssad.
_RUN_OUTSIDE = {
    "onnx": """
import sys
import numpy as np
import onnxruntime
model, inputs = sys.argv[1:3]
x = np.load(inputs)
session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
out = dict(zip(names, session.run(None, {"images": x})))
assert "ssad" not in sys.modules
np.savez(inputs + ".out.npz", **out)
""",
    "openvino": """
import sys
import numpy as np
import openvino
model, inputs = sys.argv[1:3]
x = np.load(inputs)
compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
out = {o.get_any_name(): v for o, v in compiled({"images": x}).items()}
assert "ssad" not in sys.modules
np.savez(inputs + ".out.npz", **out)
""",
}


def _images():
    rng = np.random.default_rng(7)
    return [rng.random((2, 200, 152, 3)).astype(np.float32), rng.random((1, 64, 64, 3))]


@pytest.fixture(scope="module", params=["square", "native"])
def run(request, tmp_path_factory):
    """A tiny run calibrated on good images: structure statistics and quantile thresholds;
    ``square``: a static working size (tiles unrolled), ``native``: any size (a tile loop)."""
    overrides = {"data.resize": request.param, "score.tile": 64}
    if request.param == "square":
        overrides["data.resolution"] = 128  # several tiles
    run = make_run_dir(tmp_path_factory.mktemp("run") / "run", overrides=overrides)
    good = list(np.random.default_rng(1).random((6, 64, 64, 3)).astype(np.float32))
    calibration, statistics = calibrate_on_good(Detector.load(run), good)
    RunDir(run).write_calibration(calibration, statistics)
    return run


@pytest.fixture(scope="module", params=sorted(FORMATS))
def exported(request, run, tmp_path_factory):
    for module in FORMATS[request.param]:
        pytest.importorskip(module)
    return export(run, tmp_path_factory.mktemp("exports") / "e", format=request.param)


def _format(target: Path) -> str:
    return "onnx" if (target / "model.onnx").is_file() else "openvino"


def test_export_outside_ssad_matches_the_detector(run, exported, tmp_path):
    target = exported
    model = target / MODEL_FILES[_format(target)]
    assert model.is_file() and (target / "assets.extra" / "calibration.json").is_file()
    detector = Detector.load(run)
    assert detector.statistics.mode == "structure"
    for i, images in enumerate(_images()):
        images = images.astype(np.float32)
        path = tmp_path / f"images{i}.npy"
        np.save(path, images)
        code = [sys.executable, "-c", _RUN_OUTSIDE[_format(target)], str(model), str(path)]
        subprocess.run(code, check=True, capture_output=True, text=True)
        got = np.load(str(path) + ".out.npz")
        want = detector.predict(images)
        np.testing.assert_allclose(got["heatmap"], want["heatmap"], atol=1e-4)
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["mask"], want["mask"])
        np.testing.assert_array_equal(got["is_anomalous"], want["is_anomalous"])

    loaded = Detector.load(target)  # an export loads as a detector too
    assert isinstance(loaded, ExportedDetector)
    assert loaded.pixel_threshold == detector.pixel_threshold
    images = _images()[0]
    np.testing.assert_allclose(loaded.heatmap(images), detector.heatmap(images), atol=1e-4)
    if _format(target) == "onnx":
        with pytest.raises(SsadError, match="float32"):
            ExportedDetector(target, precision="bf16")
        with pytest.raises(SsadError, match="openvino"):
            export(run, tmp_path / "bf16", format="onnx", precision="bf16")


def test_openvino_bf16_lowers_only_the_autoencoder(run, exported, tmp_path):
    if _format(exported) != "openvino":
        pytest.skip("bfloat16 is OpenVINO's")
    import openvino

    from ssad.export import autoencoder_in_bf16

    model = autoencoder_in_bf16(openvino.Core().read_model(str(exported / "model.xml")))
    ops = model.get_ordered_ops()
    for loop in [n for n in ops if n.get_type_name() == "Loop"]:  # native: the tile loop
        ops += loop.get_function().get_ordered_ops()
    convs = [n for n in ops if n.get_type_name() == "Convolution"]
    types = {n.get_output_element_type(0).get_type_name() for n in convs}
    wide = [n for n in convs if max(n.get_input_partial_shape(1)[:2].to_shape()) >= 3]
    assert {n.get_output_element_type(0).get_type_name() for n in wide} == {"bf16"}
    assert types == {"bf16", "f32"}  # smoothing and gradient filters stay float32
    for name in ("heatmap", "score"):
        assert model.output(name).get_element_type().get_type_name() == "f32"
    assert len(autoencoder_in_bf16(model.clone()).get_ordered_ops()) == len(
        model.get_ordered_ops()
    )  # lowering twice changes nothing

    images = _images()[0]
    fast = ExportedDetector(exported, precision="bf16").predict(images)  # lowered on loading
    detector = Detector.load(run)
    want = detector.predict(images)
    assert np.isfinite(fast["heatmap"]).all() and np.isfinite(fast["score"]).all()
    # bfloat16 rounding of the reconstruction only: the same heatmap up to its noise
    r = np.corrcoef(fast["heatmap"].ravel(), want["heatmap"].ravel())[0, 1]
    assert r > 0.98, r
    if detector.config.data.resize == "native":  # once: the export writes the same
        target = export(run, tmp_path / "bf16", format="openvino", precision="bf16")
        written = ExportedDetector(target).heatmap(images)
        np.testing.assert_array_equal(written, fast["heatmap"])


def test_predict_takes_an_export_and_a_missing_extra_is_one_line(
    run, exported, tmp_path, monkeypatch
):
    target, format = exported, _format(exported)
    write_png(tmp_path / "part.png", _images()[0][0])
    result = CliRunner().invoke(
        main, ["predict", str(target / MODEL_FILES[format]), str(tmp_path / "part.png"),
               "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "out" / "scores.json").read_text())
    want = Detector.load(run).predict(read_image(tmp_path / "part.png"))
    assert row["score"] == pytest.approx(float(want["score"][0]), rel=1e-4)

    import importlib.util

    real, missing = importlib.util.find_spec, CONVERTERS[format]
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    result = CliRunner().invoke(
        main, ["export", str(run), str(tmp_path / "e2"), "--format", format]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: the {format} format needs {missing}: pip install 'ssad[{format}]'"
    )


def test_serving_doc_runs_the_export_without_ssad(exported, tmp_path, monkeypatch):
    import re

    format = _format(exported)
    runtime = {"onnx": "import onnxruntime", "openvino": "import openvino"}[format]
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if runtime in b]
    (tmp_path / "export" / f"tire_{format}").mkdir(parents=True)
    (tmp_path / "export" / f"tire_{format}" / "1").symlink_to(exported)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet, namespace)
    out = namespace["out"]
    assert out["score"].shape == (1,) and out["mask"].shape == (1, 240, 320)


@pytest.mark.parametrize("run", ["square"], indirect=True)
def test_export_parity_section_compares_every_test_image(run, tmp_path):
    """The benchmark section on one geometry (the exports of both are compared above)."""
    for module in ("tf2onnx", "onnxruntime", "openvino"):
        pytest.importorskip(module)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from bench import export_parity

    from ssad.demo_data import make_demo_data

    data = make_demo_data(tmp_path / "data", n_train=1, n_good=2, n_defect=1, size=40)
    args = ["--run", str(run), "--data", str(data), "--odd-size", "30x22"]
    rows = export_parity.main(args)["runs"]
    assert [row["format"] for row in rows] == ["onnx", "openvino"]
    for row in rows:
        assert row["n_images"] == 2 + 4  # two good images, one per defect type
        for size in ("own_size", "odd_size"):
            found = row[size]
            assert found["max_abs_heatmap_diff"] < 1e-4 and found["max_rel_score_diff"] < 1e-5
            assert found["mask_pixels_differing"] == 0 and found["labels_differing"] == 0
            assert found["max_heatmap_diff_relative"] <= found["max_abs_heatmap_diff"]


def test_export_parity_measures_large_heatmaps_relative_to_their_size():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from bench.export_parity import _Worst

    want = {"heatmap": np.array([[[500.0, 0.5]]]), "score": np.array([10.0])}
    want |= {"mask": want["heatmap"] > 1, "is_anomalous": np.array([True])}
    got = dict(want, heatmap=np.array([[[500.001, 0.5 + 5e-5]]]))
    worst = _Worst()
    worst.add(got, want)
    found = worst.summary()
    assert found["max_abs_heatmap_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert found["share_of_pixels_over_1e-4"] == 0.5
    assert found["max_heatmap_diff_relative"] == pytest.approx(5e-5, rel=1e-3)  # 0.5: by 1
    assert found["share_of_pixels_over_1e-4_relative"] == 0.0
    assert found["largest_abs_heatmap"] == 500.0


def test_inference_benchmark_times_each_runtime_on_the_same_graph():
    for module in ("tf2onnx", "onnxruntime", "openvino"):
        pytest.importorskip(module)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from bench import inference

    # 256 px: OpenVINO's bfloat16 depthwise convolution used to hang from about this size on
    args = ["--presets", "tiny", "--sizes", "256", "--batches", "1", "--repeats", "1"]
    args += ["--dtypes", "float32,bfloat16", "--runtimes", "tf,onnx,openvino"]
    out = inference.main(args)
    rows = {(row["runtime"], row["dtype"]): row for row in out["results"]}
    assert list(rows) == [("tf", "float32"), ("tf", "bfloat16"), ("onnx", "float32"),
                          ("openvino", "float32"), ("openvino", "bfloat16")]  # fmt: skip
    for key in (("onnx", "float32"), ("openvino", "float32")):
        assert rows[key]["max_abs_heatmap_diff_vs_tf_float32"] < 1e-4
    reference = rows["tf", "float32"]
    for row in list(rows.values())[1:]:
        speedup = row["images_per_s"] / reference["images_per_s"]
        assert row["speedup_vs_tf_float32"] == pytest.approx(speedup)
    flops, rate = reference["flop_per_image"], reference["images_per_s"]
    assert reference["fraction_of_matmul_peak"] == pytest.approx(
        flops * rate / out["matmul_flops_per_s"]["float32"]
    )
