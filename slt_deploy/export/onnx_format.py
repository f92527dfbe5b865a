"""`onnx`: the folded dense network (W ⊙ B, BatchNorm folded into convolutions where exact),
opset 17, named input/output, dynamic batch; checked by onnx.checker and against PyTorch with
ONNX Runtime. Written by torch's TorchScript-based exporter: it is byte-for-byte
deterministic (measured), which the torch.export-based one is not promised to be."""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slt_deploy.accuracy import predictions, torch_predictor
from slt_deploy.atomic import write_bytes
from slt_deploy.errors import SltError
from slt_deploy.export.checks import check_parity
from slt_deploy.export.network import Deployable, runtime_network
from slt_deploy.export.request import ExportRequest
from slt_deploy.export.sources import dataset
from slt_deploy.runtimes import import_onnxruntime

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


SEAL_KEY = "slt_deploy.sha256"


def _digest_without_seal(model) -> str:
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != SEAL_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def seal(data: bytes) -> bytes:
    """Add a SHA-256 of the model to its metadata_props, so a damaged copy of an exported model
    is refused before a runtime sees it (ONNX itself has no checksum)."""
    import onnx

    model = onnx.load_model_from_string(data)
    model.metadata_props.add(key=SEAL_KEY, value=_digest_without_seal(model))
    return model.SerializeToString()


def verify(path: str | Path) -> None:
    """Refuse what is not ONNX, and an exported model whose seal does not match; an ONNX file
    from elsewhere (no seal) passes to the runtime as it is."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except OSError as exc:
        raise SltError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception:  # protobuf's DecodeError and friends
        raise SltError(f"{path} is not an ONNX model") from None
    seals = [p.value for p in model.metadata_props if p.key == SEAL_KEY]
    if seals and seals[-1] != _digest_without_seal(model):
        raise SltError(
            f"{path}: damaged ONNX model: it does not match its SHA-256 (export it again)"
        )


def check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises its own and protobuf errors
        raise SltError(f"{path} failed onnx.checker: {exc}") from None


def session(
    model: str | Path | bytes,
    providers: list | None = None,
    *,
    threads: int | None = None,
    spinning: bool = True,
    label: str | None = None,
):
    """The one way an ONNX Runtime session is opened: export's checks, `eval` and `bench`'s
    ort back-ends all run the file under the same options (all graph optimisations). A file is
    verified against its seal first; bytes are a network built in memory."""
    ort = import_onnxruntime()

    if not isinstance(model, bytes):
        verify(model)
        label, model = label or str(model), str(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise SltError(f"ONNX Runtime cannot load {label}: {exc}") from None


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


def write_model(model: nn.Module, input_shape: tuple[int, ...], out: Path) -> None:
    """The folded network a runtime gets (network.runtime_network) as ONNX, checked by
    onnx.checker."""
    folded = fold_batchnorm(model)
    write_bytes(out, seal(to_onnx_bytes(folded, input_shape)))
    check(out)


def write(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """`onnx`: the runtime network (a channel ticket shrunk), checked against the masked
    network it must compute."""
    model, shrunk = runtime_network(net, request.shrinks, request.channel_multiple)
    write_model(model, tuple(net.data.input_shape), request.out)
    measured = parity(request.out, net.model, inputs)
    return {
        "parity": check_parity(measured, request.out, "ONNX Runtime"),
        "opset": OPSET,
        **shrunk,
    }


def accuracy(net: Deployable, request: ExportRequest) -> dict:
    """Test accuracy of the written ONNX (ONNX Runtime) and of the fp32 PyTorch network."""
    try:
        name, split = dataset(net, request)
    except SltError as exc:
        return {"accuracy_change": None, "why": str(exc)}
    sess = session(request.out)

    def onnx_predict(x: torch.Tensor) -> np.ndarray:
        return sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0].argmax(1)

    y = split.test_y.numpy()
    ours = predictions(onnx_predict, split.test_x, net.data, 1024)
    theirs = predictions(torch_predictor(net.model), split.test_x, net.data, 1024)
    return {
        "fp32": float((theirs == y).mean()),
        "artifact": float((ours == y).mean()),
        "accuracy_change": float((ours == y).mean() - (theirs == y).mean()),
        "same_predictions": float((ours == theirs).mean()),
        "samples": len(y),
        "data": f"{name} test split",
    }
