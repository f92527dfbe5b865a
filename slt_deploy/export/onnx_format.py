"""`onnx`: the folded dense network (W ⊙ B, BatchNorm folded into convolutions where exact),
opset 17, named input/output, dynamic batch; checked by onnx.checker and against PyTorch with
ONNX Runtime. Written by torch's TorchScript-based exporter: it is byte-for-byte
deterministic (measured), which the torch.export-based one is not promised to be."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slt_deploy.atomic import write_bytes
from slt_deploy.errors import SltError
from slt_deploy.export.network import Deployable

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Conv→BatchNorm pairs fused (torch.fx's fuse); the model unchanged where FX cannot trace."""
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model  # nothing to fold; FX tracing would only add risk (timm attention)
    try:
        return fuse(model)
    except Exception:  # untraceable control flow: keep BN as its own op (still exact)
        return model


def to_onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    example = torch.zeros(1, *input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises its own and protobuf errors
        raise SltError(f"{path} failed onnx.checker: {exc}") from None


def session(path: str | Path, providers: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types
        raise SltError(f"ONNX Runtime cannot load {path}: {exc}") from None


def parity(path: Path, reference: nn.Module, inputs: torch.Tensor) -> dict:
    """Max |Δ| of the logits and agreement of predictions, ONNX Runtime vs PyTorch."""
    sess = session(path)
    with torch.no_grad():
        expected = reference(inputs).numpy()
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy().astype(np.float32)})[0]
    return {
        "runtime": "onnxruntime",
        "samples": len(inputs),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "max_abs_logit": float(np.abs(expected).max()),
        "same_predictions": float((got.argmax(1) == expected.argmax(1)).mean()),
    }


def write(net: Deployable, out: Path) -> None:
    """The folded network as ONNX, checked by onnx.checker."""
    folded = fold_batchnorm(net.model)
    write_bytes(out, to_onnx_bytes(folded, tuple(net.data.input_shape)))
    check(out)
