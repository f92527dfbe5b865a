"""Accuracy of an artifact through its own runtime: ONNX via ONNX Runtime, CSR via the sparse
runtime, .slt rebuilt from seed + masks, a ticket or run directory via PyTorch. TensorRT
engines are device-specific builds of an ONNX file: `bench` runs them, eval reads the ONNX."""

from __future__ import annotations

from pathlib import Path

from slt_deploy.accuracy import accuracy, torch_predictor
from slt_deploy.data import load_dataset
from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError


def _predictor(path: Path) -> tuple[callable, DataSpec | None, str]:
    """(batch → predicted classes, the artifact's data spec when it records one, runtime).
    The artifact's kind comes from bench's `inspect`, the one table of suffixes."""
    from slt_deploy.bench.artifacts import inspect

    kind = inspect(path).kind
    if kind == "engine":
        raise SltError(
            f"{path}: eval runs ONNX, CSR, .slt and tickets; a TensorRT engine is run by "
            "`slt-deploy bench` (eval the .onnx it was built from: the engine computes the same)"
        )
    if kind == "onnx":
        from slt_deploy.export.onnx_format import INPUT_NAME, OUTPUT_NAME, session

        sess = session(path)
        spec = _onnx_data_spec(path)
        return (
            lambda x: sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0].argmax(1),
            spec,
            "onnxruntime",
        )
    if kind == "slt":
        from slt_deploy.export.slt_format import read

        net = read(path)
        return torch_predictor(net.model), net.data, "torch (rebuilt from .slt)"
    if kind == "csr":
        from slt_deploy.export.csr_format import load

        model, spec, _ = load(path)
        return torch_predictor(model), spec, "torch.sparse (CSR)"
    from slt_deploy.search.ticket import build_model, load_ticket

    ticket = load_ticket(path)
    return torch_predictor(build_model(ticket)), ticket.data, "torch (ticket)"


def _onnx_data_spec(path: Path) -> DataSpec | None:
    """ONNX files made by `export` have a report beside them that records the data spec."""
    import json

    from slt_deploy.export.report import report_path

    report = report_path(path)
    if report.is_file():
        try:
            return DataSpec.from_dict(json.loads(report.read_text())["data"])
        except (ValueError, KeyError, TypeError):
            return None
    return None


def evaluate_artifact(
    path: str | Path,
    data: str,
    data_dir: str | None = None,
    batch_size: int = 1000,
    subset: int | None = None,
) -> dict:
    path = Path(path)
    if not path.exists():
        raise SltError(f"{path} does not exist")
    predict, spec, runtime = _predictor(path)
    split = load_dataset(data, data_dir).subset(subset)
    spec = spec or split.spec
    if tuple(spec.input_shape) != tuple(split.spec.input_shape):
        raise SltError(
            f"{path} takes inputs {tuple(spec.input_shape)}, the data set gives "
            f"{tuple(split.spec.input_shape)}"
        )
    return {
        "artifact": str(path),
        "runtime": runtime,
        "data": data,
        "samples": len(split.test_y),
        "accuracy": accuracy(predict, split.test_x, split.test_y, spec, batch_size),
    }
