"""The TensorRT path around the build itself: refusals, log parsing, engine compatibility.
(TensorRT cannot be installed on the development machines; see trt_format's docstring.)"""

import importlib.util

import pytest
import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.export.trt_format import (
    SparsityLog,
    check_engine_compatible,
    fp16_onnx,
    import_tensorrt,
    major_version,
)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
    reason="TensorRT and a GPU are present",
)
def test_missing_tensorrt_or_gpu_is_one_clear_error():
    with pytest.raises(SltError, match="--format trt` there"):
        import_tensorrt()


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
    reason="TensorRT and a GPU are present",
)
def test_cli_trt_without_tensorrt_exits_2_and_writes_nothing(tmp_path):
    import subprocess

    from conftest import PYTHON, cli_env

    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search

    search(
        SearchConfig(data="digits", epochs=1, max_steps=2, target_sparsity=0.5),
        tmp_path / "run",
        progress=False,
    )
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "slt_deploy",
            "export",
            str(tmp_path / "run"),
            "--format",
            "trt",
            "--out",
            str(tmp_path / "m.engine"),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


def test_build_log_sparsity_lines_are_counted():
    log = SparsityLog()
    for line in (
        "[I] [TRT] (Sparsity) Layers eligible for sparse math: fc1, fc2, fc3",
        "[I] [TRT] Some other line",
        "[I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: fc1",
    ):
        log.feed(line)
    assert log.eligible == ["fc1", "fc2", "fc3"] and log.picked == ["fc1"]


def test_engines_are_refused_on_another_gpu_or_version():
    built = {
        "gpu": "Orin",
        "compute_capability": "8.7",
        "tensorrt": "10.3.0",
        "platform": "Linux-aarch64",
    }
    check_engine_compatible(built, dict(built))
    for key, value in (("gpu", "NVIDIA H100"), ("tensorrt", "11.4.0")):
        with pytest.raises(SltError, match="not portable"):
            check_engine_compatible(built, {**built, key: value})
    assert major_version("11.4.1") == 11 and major_version("10.3.0") == 10


def test_fp16_network_for_strong_typing_is_valid_onnx_with_fp32_io():
    import onnx

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4, bias=False)).eval()
    proto = onnx.load_from_string(fp16_onnx(model, (1, 4, 4)))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer)


def test_int8_network_is_the_symmetric_qdq_onnx_that_explicit_quantization_takes():
    """TensorRT 10 and 11 both build int8 from Q/DQ; the graph is checked here, the build
    itself needs TensorRT."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from slt_deploy.export.request import BuildOptions
    from slt_deploy.export.trt_format import network_onnx
    from slt_deploy.init import InitSpec, frozen_weight

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        for layer in (model[1], model[3]):
            spec = InitSpec(scheme="signed-constant", seed=0)
            layer.weight.copy_(frozen_weight(spec, "w", tuple(layer.weight.shape)))
    options = BuildOptions(fp16=False, int8=True)
    with pytest.raises(SltError, match="calibrates activations"):
        network_onnx(model, (16,), options)
    calibration = [np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)]
    data, quantized = network_onnx(model, (16,), options, calibration)
    graph = onnx.load_model_from_string(data).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    zero_points = [numpy_helper.to_array(t) for t in graph.initializer if "zero_point" in t.name]
    # activations and weights int8, biases int32 (scale = input × weight scale): all symmetric
    assert {z.dtype for z in zero_points} == {np.dtype(np.int8), np.dtype(np.int32)}
    assert not any(z.any() for z in zero_points)
    assert quantized["int8"]["activation_type"] == "int8"
    assert quantized["int8"]["layers_exact"] == 2
