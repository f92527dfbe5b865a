"""The checks an export reports: parity against PyTorch on real inputs, and test accuracy of
the written artifact against the network it came from."""

from __future__ import annotations

from pathlib import Path

from slt_deploy.accuracy import accuracy, torch_predictor
from slt_deploy.errors import SltError
from slt_deploy.export.network import Deployable
from slt_deploy.export.request import ExportRequest
from slt_deploy.export.sources import dataset


def check_parity(parity: dict, out: Path, runtime: str) -> dict:
    """|Δ| ≤ 1e-4 · max(1, max |logit|): 1e-4 absolute for unit-scale logits, relative for large
    ones, where an absolute 1e-4 would be below float32's resolution (measured: Conv-4 logits
    reach 1.4e4, one ulp ≈ 1e-3, and ORT's convolutions differ from torch's there)."""
    bound = 1e-4 * max(1.0, parity["max_abs_logit"])
    parity["tolerance"] = bound
    if parity["max_abs_diff"] > bound:
        raise SltError(
            f"{out}: {runtime} differs from PyTorch by {parity['max_abs_diff']:.2e} (> 1e-4)"
        )
    return parity


def accuracy_change(before: Deployable, after: Deployable, request: ExportRequest) -> dict:
    """Test accuracy of two networks of one ticket (e.g. before and after a 2:4 projection)."""
    try:
        _, split = dataset(before, request)
    except SltError as exc:
        return {"accuracy_change": None, "why": str(exc)}
    acc = [
        accuracy(torch_predictor(net.model), split.test_x, split.test_y, before.data, 1024)
        for net in (before, after)
    ]
    return {
        "accuracy_before": acc[0],
        "accuracy_after": acc[1],
        "accuracy_change": acc[1] - acc[0],
        "samples": len(split.test_y),
    }
