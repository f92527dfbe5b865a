"""`export(source, fmt, out)`: a ticket or .slt file → a deployable artifact + its report.

Formats live in one registry; each is a module with `write(net, out, ...)`. Every export is
checked against PyTorch on real inputs and is byte-for-byte reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from slt_deploy.errors import SltError
from slt_deploy.export import csr_format, onnx_format, slt_format
from slt_deploy.export.network import Deployable, from_ticket
from slt_deploy.export.report import write_report
from slt_deploy.registry import Registry

FORMATS: Registry[Callable[..., dict]] = Registry("export format")
PARITY_SAMPLES = 256


def _sparse_parity(out: Path, net: Deployable, inputs: torch.Tensor) -> dict:
    model, _, _ = csr_format.load(out)
    with torch.no_grad():
        got, expected = model(inputs), net.model(inputs)
    return {
        "runtime": "torch.sparse (CSR)",
        "samples": len(inputs),
        "max_abs_diff": float((got - expected).abs().max()),
        "same_predictions": float((got.argmax(1) == expected.argmax(1)).float().mean()),
    }


@FORMATS.register("onnx")
def _onnx(net: Deployable, out: Path, inputs: torch.Tensor) -> dict:
    extra = onnx_format.write(net, out, inputs)
    return {"parity": extra.pop("parity_checked"), **extra}


@FORMATS.register("csr")
def _csr(net: Deployable, out: Path, inputs: torch.Tensor) -> dict:
    csr_format.write(net, out)
    parity = _sparse_parity(out, net, inputs)
    if parity["max_abs_diff"] > 1e-4:
        raise SltError(f"{out}: CSR runtime differs from PyTorch by {parity['max_abs_diff']:.2e}")
    return {"parity": parity, "index_dtype": "int32"}


@FORMATS.register("slt")
def _slt(net: Deployable, out: Path, inputs: torch.Tensor) -> dict:
    slt_format.write(net, out)
    again = slt_format.read(out)
    with torch.no_grad():
        diff = float((again.model(inputs) - net.model(inputs)).abs().max())
    same = all(torch.equal(again.masks[k], net.masks[k]) for k in net.masks)
    if not same or diff > 0.0:
        raise SltError(f"{out}: the rebuilt network differs from the ticket's ({diff:.2e})")
    return {
        "parity": {
            "runtime": "rebuilt from seed + masks",
            "samples": len(inputs),
            "max_abs_diff": diff,
            "masks_identical": same,
        },
        "bits_per_weight": 8 * out.stat().st_size / max(1, net.totals()[0]),
    }


def load_deployable(
    source: str | Path, threshold: float | None = None, sparsity: float | None = None
) -> Deployable:
    """A run directory, a ticket (.safetensors) or an .slt file."""
    from slt_deploy.ticket import load_ticket

    source = Path(source)
    if source.is_file() and source.suffix == ".slt":
        if threshold is not None or sparsity is not None:
            raise SltError("an .slt ticket holds binary masks already: no --threshold/--sparsity")
        return slt_format.read(source)
    return from_ticket(load_ticket(source), threshold, sparsity)


def parity_inputs(
    net: Deployable, data: str | None, data_dir: str | None
) -> tuple[torch.Tensor, str]:
    """Real test inputs of the ticket's data set (or of --data/--data-dir); the report says
    which. Random inputs only when no data set can be read, and the report says so too."""
    from slt_deploy.data import load_dataset
    from slt_deploy.data.base import normalise

    name = data or net.source.get("data") or net.data.name
    directory = data_dir or net.source.get("data_dir")
    try:
        split = load_dataset(name, directory)
        if tuple(split.spec.input_shape) != tuple(net.data.input_shape):
            raise SltError("input shape differs")
        return normalise(split.test_x[:PARITY_SAMPLES], net.data), f"{name} test split"
    except SltError:
        generator = torch.Generator().manual_seed(0)
        shape = (PARITY_SAMPLES, *net.data.input_shape)
        return torch.randn(shape, generator=generator), "random normal (data set not found)"


def export(
    source: str | Path,
    fmt: str,
    out: str | Path,
    threshold: float | None = None,
    sparsity: float | None = None,
    data: str | None = None,
    data_dir: str | None = None,
) -> dict:
    writer = FORMATS.get(fmt)
    out = Path(out)
    net = load_deployable(source, threshold, sparsity)
    inputs, described = parity_inputs(net, data, data_dir)
    extra = writer(net, out, inputs)
    parity = extra.pop("parity")
    parity["inputs"] = described
    return write_report(out, fmt, net, parity, extra)
