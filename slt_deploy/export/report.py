"""`<artifact>.json`: what every export writes beside its artifact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from slt_deploy.atomic import write_text
from slt_deploy.export.network import Deployable

REPORT_VERSION = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def report_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".json")


def write_report(artifact: Path, fmt: str, net: Deployable, parity: dict, extra: dict) -> dict:
    """Sizes, sparsity, parity and checksum; no timestamps, so re-exports are byte-identical."""
    total, kept = net.totals()
    report = {
        "report_version": REPORT_VERSION,
        "format": fmt,
        "artifact": artifact.name,
        "bytes": artifact.stat().st_size,
        "dense_fp32_bytes": 4 * sum(p.numel() for p in net.model.parameters())
        + 4 * sum(b.numel() for n, b in net.model.named_buffers() if "running" in n),
        "weights_total": total,
        "weights_kept": kept,
        # kept by the search, but on dead paths: out of the mask, the function unchanged
        "dead_path_weights_removed": sum(net.source.get("dead_path_weights_removed", {}).values()),
        "sparsity": 1.0 - kept / total if total else 0.0,
        "per_layer": net.per_layer(),
        "parity": parity,
        "sha256": sha256(artifact),
        "model": net.model_spec.to_dict(),
        "data": net.data.to_dict(),
        "source": net.source,
        **extra,
    }
    write_text(report_path(artifact), json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
