"""`export(ExportRequest(source, fmt, out))`: a ticket or .slt file → a deployable artifact
and its report.

The formats are one table (export/formats.py); each format's module writes the artifact with
`write(net, request, inputs)` and returns the report fields, `parity` among them. Every export
is checked against PyTorch on real inputs and is byte-for-byte reproducible.

This module imports nothing heavy, so that the CLI can read the format table without torch;
`ExportRequest`, `load_deployable` and `runtime_network` are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slt_deploy.errors import SltError
from slt_deploy.export.formats import FORMATS, ExportFormat

if TYPE_CHECKING:
    from slt_deploy.export.request import ExportRequest

__all__ = ["FORMATS", "ExportFormat", "ExportRequest", "export", "load_deployable"]

_LAZY = {
    "ExportRequest": "slt_deploy.export.request",
    "load_deployable": "slt_deploy.export.sources",
    "runtime_network": "slt_deploy.export.network",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export(request: ExportRequest) -> dict:
    """Write `request.out` and `request.out`.json; the report is returned. A target profile's
    sparsity pattern is applied (2:4 projected, channel required) and the profile is recorded
    in the report."""
    from slt_deploy.export.report import write_report
    from slt_deploy.export.sources import load_deployable, parity_inputs

    writer = request.format.writer()
    precheck = getattr(writer, "precheck", None)
    if precheck is not None:
        precheck(request)
    net = load_deployable(request.source, request.threshold, request.sparsity, request.pattern_24)
    target = request.target
    if target is not None and target.sparsity == "channel" and not net.channel_ticket:
        raise SltError(
            f"target {target.name} runs channel tickets (shrunk, dense kernels); search with "
            "--granularity channel"
        )
    inputs, described = parity_inputs(net, request)
    fields = writer.write(net, request, inputs)
    parity = fields.pop("parity")
    parity["inputs"] = described
    # where the network came from, so `bench --backend torch` can rebuild it from this file
    fields["source_path"] = str(request.source)
    fields["mask_options"] = {"threshold": request.threshold, "sparsity": request.sparsity}
    if target is not None:
        fields["target"] = target.to_dict()
    return write_report(request.out, request.fmt, net, parity, fields)
