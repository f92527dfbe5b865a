"""int8 export: exact weights for signed-constant tickets, measured error and accuracy for
uniform ones, channel tickets shrunk first, byte-for-byte determinism, refusals, eval/bench."""

import json

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from slt_deploy.bench.artifacts import deployable, inspect
from slt_deploy.errors import SltError
from slt_deploy.evaluate import evaluate_artifact
from slt_deploy.export import ExportRequest, export
from slt_deploy.export.request import Int8Options
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search


def _run(tmp_path_factory, name: str, **fields):
    out = tmp_path_factory.mktemp("int8") / name
    search(SearchConfig(data="digits", target_sparsity=0.9, **fields), out, progress=False)
    return out


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    return _run(tmp_path_factory, "signed", epochs=8, seed=1, init="signed-constant")


@pytest.fixture(scope="module")
def uniform(tmp_path_factory):
    return _run(tmp_path_factory, "uniform", epochs=8, seed=1, init="uniform")


def _weights(path):
    model = onnx.load(str(path))
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name.endswith("_quantized")
    }, {n.op_type for n in model.graph.node}


def test_signed_constant_weights_are_exact_and_stored_as_plus_minus_one(signed, tmp_path):
    report = export(ExportRequest(signed, "onnx-int8", tmp_path / "m.int8.onnx"))
    quantized = report["int8"]
    assert quantized["layers_quantized"] == 3
    assert quantized["layers_exact"] == 3 == quantized["layers_with_seed_scales"]
    assert all(e["max_abs_error"] == 0.0 for e in quantized["weight_errors"].values())
    weights, ops = _weights(tmp_path / "m.int8.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ, as TensorRT takes it
    assert len(weights) == 3
    for values in weights.values():
        assert values.dtype == np.int8 and set(np.unique(values)) <= {-1, 0, 1}
    # 90% of the weights are zeros: int8 + compression-free storage is ~4x below fp32
    assert report["bytes"] < 0.3 * report["dense_fp32_bytes"]
    accuracy = report["accuracy"]
    assert accuracy["samples"] == 360 and accuracy["data"] == "digits test split"
    # eval through ONNX Runtime reads the same file: the same accuracy the export measured
    assert evaluate_artifact(tmp_path / "m.int8.onnx", "digits")["accuracy"] == pytest.approx(
        accuracy["artifact"]
    )


def test_uniform_weights_report_their_rounding_error_within_half_a_step(uniform, tmp_path):
    report = export(ExportRequest(uniform, "onnx-int8", tmp_path / "u.int8.onnx"))
    quantized = report["int8"]
    assert quantized["layers_with_seed_scales"] == 0 and quantized["layers_exact"] == 0
    for error in quantized["weight_errors"].values():
        # symmetric max-abs scale per channel: |error| <= scale / 2 <= max|w| / 254
        assert 0.0 < error["max_abs_error"] <= error["max_abs_weight"] / 254 * (1 + 1e-6)
    accuracy = report["accuracy"]
    assert accuracy["same_predictions"] >= 0.95
    assert abs(accuracy["accuracy_change"]) <= 0.03


def test_int8_exports_are_byte_for_byte_reproducible(signed, tmp_path):
    for activations in ("static", "dynamic"):
        options = Int8Options(dynamic=activations == "dynamic")
        a = export(
            ExportRequest(signed, "onnx-int8", tmp_path / f"a-{activations}.onnx", int8=options)
        )
        b = export(
            ExportRequest(signed, "onnx-int8", tmp_path / f"b-{activations}.onnx", int8=options)
        )
        assert a["sha256"] == b["sha256"]


def test_dynamic_int8_needs_no_calibration_and_quantizes_the_matmuls(signed, tmp_path):
    options = Int8Options(dynamic=True)
    report = export(ExportRequest(signed, "onnx-int8", tmp_path / "d.onnx", int8=options))
    assert report["int8"]["activations"] == "dynamic"
    assert report["int8"]["layers_exact"] == 3
    _, ops = _weights(tmp_path / "d.onnx")
    assert "MatMulInteger" in ops and "QuantizeLinear" not in ops


def test_symmetric_int8_activations_have_zero_points_of_zero(signed, tmp_path):
    options = Int8Options(activation_type="int8")
    export(ExportRequest(signed, "onnx-int8", tmp_path / "s.onnx", int8=options))
    model = onnx.load(str(tmp_path / "s.onnx"))
    zero_points = [
        numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("zero_point")
    ]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def test_channel_ticket_is_shrunk_then_quantized_exactly(tmp_path_factory, tmp_path):
    run = _run(
        tmp_path_factory,
        "conv",
        model="conv2",
        model_kwargs={"width": 0.25},
        granularity="channel",
        epochs=2,
        init="signed-constant",
    )
    report = export(ExportRequest(run, "onnx-int8", tmp_path / "c.int8.onnx"))
    assert report["shrunk"]["applied"] and report["shrunk"]["params_ratio"] < 1.0
    # BatchNorm folded into the convolutions scales each channel by one factor: still ±c
    assert report["int8"]["layers_exact"] == report["int8"]["layers_quantized"] >= 3
    assert report["parity"]["same_predictions"] >= 0.9


def test_bench_runs_int8_under_ort_and_refuses_a_torch_backend(signed, tmp_path):
    export(ExportRequest(signed, "onnx-int8", tmp_path / "m.int8.onnx"))
    artifact = inspect(tmp_path / "m.int8.onnx")
    with pytest.raises(SltError, match="int8 ONNX"):
        deployable(artifact)
    result = run_cli(
        "bench",
        str(tmp_path / "m.int8.onnx"),
        "--min-seconds",
        "0.05",
        "--min-iterations",
        "3",
        "--warmup-ms",
        "1",
        "--no-memory",
        "--json",
        str(tmp_path / "b.json"),
    )
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "b.json").read_text())
    assert {r["backend"] for r in records} == {"ort"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--calibration-samples", "0"], "--calibration-samples must be >= 1"),
        (["--data", "no-such-set"], "static int8 calibrates on training images"),
    ],
)
def test_bad_int8_options_are_one_line(signed, tmp_path, args, message):
    result = run_cli(
        "export", str(signed), "--format", "onnx-int8", "--out", str(tmp_path / "x.onnx"), *args
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_shipped_target_profiles_load_and_x86_vnni_exports_int8(signed, tmp_path):
    from slt_deploy.export.targets import available, load_target

    assert {"jetson-orin", "x86-vnni", "datacenter-gpu"} <= set(available())
    orin = load_target("jetson-orin")
    assert (orin.format, orin.precision, orin.sparsity) == ("trt", "int8", "2:4")
    result = run_cli(
        "export", str(signed), "--target", "x86-vnni", "--out", str(tmp_path / "t.onnx")
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "t.onnx.json").read_text())
    assert report["format"] == "onnx-int8" and report["target"]["name"] == "x86-vnni"
    assert report["int8"]["activation_type"] == "uint8"


@pytest.mark.parametrize(
    "profile,message",
    [
        ('format = "onnx"\nprecision = "fp32"\nspeed = "max"\n', "unknown key(s) speed"),
        ('format = "onnx"\nprecision = "int8"\n', "format onnx carries fp32, not 'int8'"),
        ('format = "tflite"\nprecision = "int8"\n', "format must be one of"),
        ('format = "onnx"\nprecision = "fp32"\nbatch_sizes = [0]\n', "batch_sizes must be"),
        ('format = "trt"\nprecision = "int8"\nint8_activations = "dynamic"\n', "not dynamic"),
        (
            'format = "onnx"\nprecision = "fp32"\nsparsity = "channel"\n',
            "search with --granularity",
        ),
        ('format = "onnx"\nprecision = ', "is not valid TOML"),
        ('precision = "fp32"\n', "needs 'format'"),
    ],
)
def test_bad_target_profiles_are_one_line_and_write_nothing(signed, tmp_path, profile, message):
    path = tmp_path / "mine.toml"
    path.write_text(profile)
    result = run_cli(
        "export", str(signed), "--target", str(path), "--out", str(tmp_path / "x.onnx")
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_target_and_format_together_is_one_line(signed, tmp_path):
    out = str(tmp_path / "x.onnx")
    result = run_cli(
        "export", str(signed), "--target", "x86-vnni", "--format", "onnx", "--out", out
    )
    assert result.returncode == 2 and "drop --format or drop --target" in result.stderr
    result = run_cli("export", str(signed), "--target", "no-such-board", "--out", out)
    assert result.returncode == 2 and "unknown target 'no-such-board'" in result.stderr


def test_an_slt_ticket_exports_straight_to_the_same_int8_bytes(signed, tmp_path):
    export(ExportRequest(signed, "slt", tmp_path / "m.slt"))
    from_run = export(ExportRequest(signed, "onnx-int8", tmp_path / "a.onnx"))
    from_slt = export(ExportRequest(tmp_path / "m.slt", "onnx-int8", tmp_path / "b.onnx"))
    assert from_slt["sha256"] == from_run["sha256"]  # the weights come from the seed
