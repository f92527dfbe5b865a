"""`trt`: a TensorRT engine built from the exported ONNX with the TensorRT Python API.

Supports TensorRT 10.x (JetPack 6 ships 10.3) and 11.x. 11.x removed the precision builder
flags (FP16, INT8): reduced precision must be in the network itself. So fp16 is done the same
way on both: the folded model is exported as an fp16 ONNX (casts at input and output) and built
as a strongly typed network. int8 is explicit quantization on both: the QDQ ONNX of
`onnx-int8` (symmetric int8 activations calibrated on training images, per-channel weights,
exact for signed-constant tickets), built strongly typed on 11.x and with the INT8 flag on 10.x.
Sparse weights are on for 2:4 tickets; the report counts the layers TensorRT found eligible
for sparse math and the ones it picked sparse kernels for, parsed from its build log.

Engines are tied to a GPU, a platform and a TensorRT version: the engine's JSON records them
and `check_engine_compatible` refuses a mismatch. TensorRT is imported lazily; without it (or
without a GPU) the user gets one line and the advice to build on the target.

Not run on this project's development machines (no TensorRT, no GPU): the code follows the
official Python API; everything around it is tested (log parsing, metadata, refusals).
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.export.network import Deployable, runtime_network
from slt_deploy.export.request import BuildOptions, ExportRequest
from slt_deploy.export.sources import calibration_batches
from slt_deploy.masking.structure import is_24, supports_24

ADVICE = (
    "export --format onnx (or 2:4) here, copy the .slt or the ONNX to the target and run "
    "`slt-deploy export ... --format trt` there"
)
ELIGIBLE = re.compile(r"eligible for sparse math:?\s*(.*)", re.IGNORECASE)
PICKED = re.compile(r"picked sparse implementation for layers:?\s*(.*)", re.IGNORECASE)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise SltError(f"TensorRT is not installed (pip install tensorrt); or {ADVICE}") from None
    if not torch.cuda.is_available():
        raise SltError(f"TensorRT needs a CUDA GPU and none is available; {ADVICE}")
    return trt


def major_version(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise SltError(f"unrecognised TensorRT version {version!r}") from None


def _layer_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass
class SparsityLog:
    """What TensorRT's build log says about 2:4 kernels."""

    eligible: list[str] = field(default_factory=list)
    picked: list[str] = field(default_factory=list)

    def feed(self, message: str) -> None:
        if match := ELIGIBLE.search(message):
            self.eligible += _layer_list(match.group(1))
        if match := PICKED.search(message):
            self.picked += _layer_list(match.group(1))


class _Half(nn.Module):
    """fp32 in and out, fp16 inside: a strongly typed fp16 network for TensorRT 10 and 11."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def fp16_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    import copy

    from slt_deploy.export.onnx_format import fold_batchnorm, to_onnx_bytes

    return to_onnx_bytes(_Half(copy.deepcopy(fold_batchnorm(model))), input_shape)


def device_record(trt) -> dict:
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "tensorrt": trt.__version__,
        "platform": f"{platform.system()}-{platform.machine()}",
    }


def check_engine_compatible(recorded: dict, current: dict) -> None:
    """Engines are not portable: refuse a GPU, platform or TensorRT version other than the
    one the engine was built for."""
    for key in ("gpu", "compute_capability", "tensorrt", "platform"):
        if recorded.get(key) != current.get(key):
            raise SltError(
                f"engine built for {key} {recorded.get(key)!r}, this machine has "
                f"{current.get(key)!r}: engines are not portable; rebuild it here"
            )


def network_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    options: BuildOptions,
    calibration: list | None = None,
) -> tuple[bytes, dict]:
    """The ONNX TensorRT parses and what the report says of it: fp16 casts in the graph for
    fp16; for int8 the QDQ ONNX of `onnx-int8` (symmetric int8 activations, as TensorRT takes
    them); fp32 otherwise."""
    from slt_deploy.export.onnx_format import fold_batchnorm, to_onnx_bytes

    if options.int8:
        from slt_deploy.export.int8_format import quantize
        from slt_deploy.export.request import Int8Options

        if calibration is None:
            raise SltError("trt --int8 calibrates activations on training images (--data)")
        fp32 = to_onnx_bytes(fold_batchnorm(model), input_shape)
        return quantize(fp32, Int8Options(activation_type="int8"), calibration)
    if options.fp16:
        return fp16_onnx(model, input_shape), {}
    return to_onnx_bytes(fold_batchnorm(model), input_shape), {}


def build_engine(
    model: nn.Module,
    input_shape: tuple[int, ...],
    options: BuildOptions,
    calibration: list | None = None,
) -> tuple[bytes, dict]:
    """Serialized engine bytes and the record (device, options, sparsity log, int8 weights)."""
    onnx_bytes, quantized = network_onnx(model, input_shape, options, calibration)
    engine, record = engine_from_onnx(onnx_bytes, input_shape, options)
    if quantized:
        record["int8_weights"] = quantized["int8"]
    return engine, record


def network_flags(trt, options: BuildOptions) -> int:
    """Strongly typed wherever precision is in the graph (fp16 casts, int8 Q/DQ) and the
    version has the flag (10.x, 11.x); TensorRT 10 without it falls back to builder flags."""
    if (options.fp16 or options.int8) and hasattr(
        trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"
    ):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def engine_from_onnx(
    onnx_bytes: bytes, input_shape: tuple[int, ...], options: BuildOptions
) -> tuple[bytes, dict]:
    """Build from ONNX bytes; precision comes from the graph (casts or Q/DQ)."""
    from slt_deploy.export.onnx_format import INPUT_NAME

    trt = import_tensorrt()
    log = SparsityLog()

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, message) -> None:
            log.feed(message)

    logger = _Logger()
    builder = trt.Builder(logger)
    flags = network_flags(trt, options)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SltError(f"TensorRT could not parse the ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if options.int8 and not flags and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)  # weakly typed 10.x: Q/DQ needs the flag
    profile = builder.create_optimization_profile()
    shape = tuple(input_shape)
    profile.set_shape(
        INPUT_NAME, (1, *shape), (options.max_batch, *shape), (options.max_batch, *shape)
    )
    config.add_optimization_profile(profile)
    cache = None
    if options.timing_cache is not None:
        blob = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SltError("TensorRT failed to build the engine (see its log)")
    if cache is not None:
        from slt_deploy.atomic import write_bytes

        write_bytes(options.timing_cache, bytes(memoryview(cache.serialize())))
    record = {
        **device_record(trt),
        "fp16": options.fp16,
        "int8": options.int8,
        "sparse_weights": options.sparse,
        "max_batch": options.max_batch,
        "sparse_layers_eligible": log.eligible,
        "sparse_layers_picked": log.picked,
    }
    return bytes(memoryview(serialized)), record


def run_engine(engine_bytes: bytes, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of a serialized engine on `inputs` (fp32), through the TensorRT runtime."""
    from slt_deploy.export.onnx_format import INPUT_NAME, OUTPUT_NAME

    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    x = inputs.contiguous().cuda()
    context.set_input_shape(INPUT_NAME, tuple(x.shape))
    out = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), device="cuda")
    context.set_tensor_address(INPUT_NAME, x.data_ptr())
    context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise SltError("TensorRT failed to run the engine")
    stream.synchronize()
    return out.cpu()


def write_engine(
    net,
    model: nn.Module,
    out: Path,
    inputs: torch.Tensor,
    options: BuildOptions,
    calibration: list | None = None,
) -> dict:
    """An engine of `model` (network.runtime_network: a channel ticket shrunk), checked against
    the masked network `net.model`; `calibration`: training batches for int8."""
    from slt_deploy.atomic import write_bytes

    engine, record = build_engine(model, tuple(net.data.input_shape), options, calibration)
    write_bytes(out, engine)
    batch = inputs[: options.max_batch]
    got = run_engine(engine, batch)
    with torch.no_grad():
        expected = net.model(batch)
    parity = {
        "runtime": f"tensorrt {record['tensorrt']}",
        "samples": len(batch),
        "max_abs_diff": float((got - expected).abs().max()),
        "same_predictions": float((got.argmax(1) == expected.argmax(1)).float().mean()),
    }
    quantized = record.pop("int8_weights", None)
    return {"parity": parity, "engine": record, **({"int8": quantized} if quantized else {})}


def precheck(request: ExportRequest) -> None:
    """Fail before any work when TensorRT or a GPU is missing."""
    import_tensorrt()


def write(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """`trt`: an engine, fp16 by default, sparse weights on for 2:4 masks; the parity
    tolerance is fp16's, so it is reported rather than enforced at 1e-4."""

    options = request.trt
    if options.sparse is None:
        structured = [is_24(m) for m in net.masks.values() if supports_24(tuple(m.shape))]
        options = replace(options, sparse=bool(structured) and all(structured))
    model, shrunk = runtime_network(net, request.shrinks, request.channel_multiple)
    calibration = calibration_batches(net, request) if options.int8 else None
    return {**write_engine(net, model, request.out, inputs, options, calibration), **shrunk}
