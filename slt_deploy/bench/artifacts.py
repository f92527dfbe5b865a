"""What an artifact is, which back-end runs it by default, and the network behind it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slt_deploy.errors import SltError


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # onnx | csr | engine | slt | ticket

    @property
    def label(self) -> str:
        return self.path.name or str(self.path)

    @property
    def nbytes(self) -> int:
        """Bytes a device must store: the file itself (a run directory's ticket)."""
        if self.kind == "ticket" and self.path.is_dir():
            from slt_deploy.search.ticket import resolve_ticket_path

            return resolve_ticket_path(self.path).stat().st_size
        return self.path.stat().st_size

    def report(self) -> dict | None:
        """The `<artifact>.json` that `export` wrote beside it, when there is one."""
        from slt_deploy.export.report import report_path

        path = report_path(self.path)
        if not path.is_file():
            return None
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            raise SltError(f"{path} is not a readable export report") from None
        if not isinstance(report, dict) or not all(
            isinstance(report.get(k, ""), str) for k in ("format", "source_path")
        ):
            raise SltError(f"{path} is not an export report of slt-deploy")
        for key in ("engine", "mask_options"):
            if not isinstance(report.get(key, {}), dict):
                raise SltError(f"{path} is not an export report of slt-deploy")
        return report

    def data_spec(self):
        """The data spec (input shape, normalisation) the export report records, or None."""
        from slt_deploy.data.base import DataSpec

        try:
            return DataSpec.from_dict((self.report() or {})["data"])
        except (SltError, ValueError, KeyError, TypeError):
            return None


def inspect(path: str | Path) -> Artifact:
    """The artifact's kind, from the suffixes of the format table (export/formats.py); a run
    directory or a ticket .safetensors is a ticket."""
    from slt_deploy.export.formats import TICKET_KIND, kind_of, known_suffixes

    path = Path(path)
    if not path.exists():
        raise SltError(f"{path} does not exist")
    kind = TICKET_KIND if path.is_dir() else kind_of(path.name)
    if kind is None and path.name.endswith(".safetensors"):
        kind = TICKET_KIND
    if kind is None:
        raise SltError(
            f"{path}: unknown artifact type (expected {', '.join(known_suffixes())}, "
            "a ticket .safetensors or a run directory)"
        )
    return Artifact(path, kind)


def runtime_model(artifact: Artifact, net):
    """The network the artifact holds: for a shrunk channel ticket's ONNX, the shrunk network
    (export.runtime_network with the options its report records), so every back-end runs what
    ONNX Runtime runs; otherwise the folded ticket network itself."""
    report = artifact.report() or {}
    shrunk = report.get("shrunk") or {}
    if artifact.kind != "onnx" or not shrunk.get("applied"):
        return net.model
    from slt_deploy.export.network import runtime_network

    return runtime_network(net, True, int(shrunk.get("channel_multiple", 8)))[0]


def deployable(artifact: Artifact):
    """The folded PyTorch network of a ticket, run directory or .slt file; of an ONNX or CSR
    export, the one its report names as the source (so torch can run what ORT runs)."""
    from slt_deploy.export.sources import load_deployable

    if artifact.kind in ("ticket", "slt"):
        return load_deployable(artifact.path)
    report = artifact.report()
    source = (report or {}).get("source_path")
    if (report or {}).get("format") == "onnx-int8":
        raise SltError(
            f"{artifact.path} is int8 ONNX: ONNX Runtime runs it (--backend ort); a torch "
            "back-end would time the fp32 network behind it instead"
        )
    if artifact.kind in ("onnx", "csr") and source and Path(source).exists():
        options = report.get("mask_options") or {}
        net = load_deployable(
            source,
            options.get("threshold"),
            options.get("sparsity"),
            pattern_24=report.get("format") == "2:4"
            or (report.get("target") or {}).get("sparsity") == "2:4",
        )
        if net.totals()[1] != report.get("weights_kept"):
            raise SltError(f"{source} no longer matches {artifact.path} (kept weights differ)")
        return net
    raise SltError(
        f"{artifact.path}: the torch back-ends need the ticket or .slt behind it and its export "
        "report does not name one that exists here; bench the ticket itself"
    )
