"""`onnx-int8`: the folded network as quantized ONNX, through ONNX Runtime's own quantizer.

Static (default): QDQ ONNX (QuantizeLinear/DequantizeLinear pairs), int8 weights per output
channel, activation scales from a MinMax calibration pass over training images. QDQ is the
form TensorRT takes for int8 (explicit quantization; TensorRT 11 takes nothing else) and the
one ONNX Runtime's CPU kernels are tuned for. Dynamic (`dynamic=True`): activations quantized
at run time (MatMulInteger/ConvInteger), no calibration; ONNX Runtime on CPU only.

What is specific to tickets: a signed-constant ticket's kept weights are ±c in every output
channel (c per layer, times the BatchNorm factor once folded). Such a channel gets the scale c
and the values ±1, so its int8 weights are the fp32 weights exactly, with no range estimate
for them. Other weights get ONNX Runtime's symmetric max-abs scale; the report gives the
measured weight error of every layer either way.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.export import onnx_format
from slt_deploy.export.network import Deployable, runtime_network
from slt_deploy.export.request import ExportRequest, Int8Options
from slt_deploy.export.sources import calibration_batches


def _weight_axes(model) -> dict[str, int]:
    """Each weight initializer of a Conv, Gemm or MatMul and its output-channel axis (the axis
    ONNX Runtime quantizes per channel)."""
    initializers = {t.name for t in model.graph.initializer}
    axes: dict[str, int] = {}
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if node.op_type == "Conv":
            axes[node.input[1]] = 0
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            axes[node.input[1]] = 0 if trans_b else 1
        elif node.op_type == "MatMul":
            axes[node.input[1]] = 1
    return axes


def _channel_magnitudes(weight: np.ndarray, axis: int) -> np.ndarray | None:
    """The one nonzero |w| of each output channel (1.0 for an empty channel), or None where a
    channel holds two different magnitudes (not a signed-constant layer)."""
    channels = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    magnitudes = np.ones(len(channels), dtype=np.float32)
    for i, row in enumerate(np.abs(channels)):
        kept = row[row != 0]
        if kept.size == 0:
            continue
        if kept.min() != kept.max():
            return None
        magnitudes[i] = kept[0]
    return magnitudes


def exact_overrides(model) -> dict[str, list[dict]]:
    """ONNX Runtime's per-channel TensorQuantOverrides that make every ±c layer exact:
    scale c, zero point 0, so the stored values are −1, 0 and 1."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    overrides = {}
    for name, axis in sorted(_weight_axes(model).items()):
        magnitudes = _channel_magnitudes(arrays[name], axis)
        if magnitudes is None:
            continue
        overrides[name] = [
            {"axis": axis, "scale": np.float32(m), "zero_point": np.int8(0)} for m in magnitudes
        ]
    return overrides


def weight_errors(fp32, quantized) -> dict[str, dict]:
    """Per weight: max |dequantized − fp32| over the tensor, and whether they are identical,
    read back from the written file (not from what was asked of the quantizer)."""
    from onnx import numpy_helper

    before = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    errors = {}
    for name, axis in sorted(_weight_axes(fp32).items()):
        q = after.get(f"{name}_quantized")
        if q is None:
            continue  # left in float by the quantizer (e.g. a Gemm under dynamic)
        scale = after[f"{name}_scale"].astype(np.float32)
        zero = after[f"{name}_zero_point"].astype(np.float32)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        dequantized = (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
        diff = np.abs(dequantized - before[name])
        errors[name] = {
            "max_abs_error": float(diff.max()),
            "max_abs_weight": float(np.abs(before[name]).max()),
            "exact": bool(np.array_equal(dequantized, before[name])),
            "per_channel": bool(scale.size > 1),
        }
    return errors


def gemm_to_matmul(model) -> None:
    """Gemm (alpha = beta = 1) → MatMul + Add, in place: dynamic quantization only handles
    MatMul, and torch exports every 2-D Linear as Gemm."""
    from onnx import helper, numpy_helper

    arrays = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        constant = len(node.input) > 1 and node.input[1] in arrays
        if node.op_type != "Gemm" or not plain or attrs.get("transA", 0) or not constant:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            tensor = arrays[weight]
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).T.copy(), weight))
        product = f"{node.name or weight}_matmul"
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product]))
            nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output)))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], list(node.output)))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _reader(batches: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    from slt_deploy.export.onnx_format import INPUT_NAME

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def get_next(self):
            batch = next(self.pending, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Batches()


def quantize(
    fp32_bytes: bytes, options: Int8Options, calibration: list[np.ndarray] | None
) -> tuple[bytes, dict]:
    """Quantized ONNX bytes from fp32 ONNX bytes, and what the report records about them."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load_model_from_string(fp32_bytes)
    overrides = exact_overrides(model) if options.exact_weights else {}
    with tempfile.TemporaryDirectory(prefix="slt-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        quiet = contextlib.redirect_stdout(io.StringIO()), _quiet_logging()
        with quiet[0], quiet[1]:
            if options.dynamic:
                gemm_to_matmul(model)
                overrides = exact_overrides(model) if options.exact_weights else {}
                onnx.save_model(model, source)
                quantize_dynamic(
                    source,
                    target,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    extra_options={"TensorQuantOverrides": overrides, "MatMulConstBOnly": True},
                )
            else:
                if not calibration:
                    raise SltError("static int8 needs calibration images (--data)")
                onnx.save_model(model, source)
                activation = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
                quantize_static(
                    source,
                    target,
                    _reader(calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=activation[options.activation_type],
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={
                        "ActivationSymmetric": options.activation_type == "int8",
                        "WeightSymmetric": True,
                        "TensorQuantOverrides": overrides,
                        # exact ±1 weights must stay as asked: no rescaling for the int32 bias
                        "QDQDisableWeightAdjustForInt32Bias": True,
                    },
                )
        quantized = onnx.load_model(target)
    errors = weight_errors(model, quantized)
    if not errors:
        raise SltError("ONNX Runtime's quantizer quantized no weight of this network")
    fields = {
        "int8": {
            **options.to_dict(),
            "layers_quantized": len(errors),
            "layers_exact": sum(e["exact"] for e in errors.values()),
            "layers_with_seed_scales": len(overrides),
            "weight_errors": errors,
        }
    }
    return quantized.SerializeToString(), fields


@contextlib.contextmanager
def _quiet_logging():
    """ONNX Runtime's quantizer logs advice at WARNING through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def write_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    out: Path,
    options: Int8Options,
    calibration: list[np.ndarray] | None,
) -> dict:
    """The folded (and, for channel tickets, shrunk) network as sealed, checked int8 ONNX."""
    from slt_deploy.atomic import write_bytes
    from slt_deploy.export.onnx_format import check, fold_batchnorm, seal, to_onnx_bytes

    data, fields = quantize(to_onnx_bytes(fold_batchnorm(model), input_shape), options, calibration)
    write_bytes(out, seal(data))
    check(out)
    return fields


def write(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """`onnx-int8`: the runtime network quantized. Its logits cannot meet fp32's 1e-4, so
    parity is reported, not enforced, and accuracy on the test split is measured against the
    fp32 network."""

    model, shrunk = runtime_network(net, request.shrinks, request.channel_multiple)
    calibration = None if request.int8.dynamic else calibration_batches(net, request)
    fields = write_model(model, tuple(net.data.input_shape), request.out, request.int8, calibration)
    parity = onnx_format.parity(request.out, net.model, inputs)
    parity["tolerance"] = None  # int8: reported, not enforced
    return {
        "parity": parity,
        "opset": onnx_format.OPSET,
        "accuracy": onnx_format.accuracy(net, request),
        **fields,
        **shrunk,
    }
