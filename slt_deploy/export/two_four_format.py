"""`2:4`: dense ONNX with the 2:4 zeros folded in, what ONNX Runtime and TensorRT's parser
consume; TensorRT compresses it itself under its sparse-weights flag, so the compressed form's
size is reported, not written. The pattern is verified layer by layer; where the ticket's mask
was projected to 2:4, the accuracy change is measured on the test split."""

from __future__ import annotations

import torch

from slt_deploy.errors import SltError
from slt_deploy.export import onnx_format
from slt_deploy.export.checks import accuracy_change
from slt_deploy.export.network import Deployable
from slt_deploy.export.request import ExportRequest
from slt_deploy.export.sources import load_deployable
from slt_deploy.masking.structure import compressed_24_bytes, is_24, supports_24


def write(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    structured = {n: is_24(m) for n, m in net.masks.items() if supports_24(tuple(m.shape))}
    broken = [n for n, ok in structured.items() if not ok]
    if broken:  # only an .slt source can get here: it holds no gate values to project with
        raise SltError(
            f"masks are not 2:4 in {', '.join(broken)}; export --format 2:4 from "
            "the run directory, whose gate values allow a projection"
        )
    fields = onnx_format.write(net, request, inputs)
    compressed = sum(
        compressed_24_bytes(net.model.get_submodule(name).weight.detach())
        for name in sorted(structured)
    )
    projection: dict = {"projected_layers": net.source.get("projected_to_24", [])}
    if projection["projected_layers"]:
        before = load_deployable(request.source, request.threshold, request.sparsity)
        projection.update(accuracy_change(before, net, request))
    return {
        **fields,
        "pattern_24_layers": sorted(structured),
        "dense_layers": sorted(n for n in net.masks if n not in structured),
        "compressed_24_bytes": compressed,
        "projection": projection,
    }
