"""`csr`: per-layer CSR weights (int32 indices, float32 values) in safetensors, with the model
spec and the remaining tensors (BN statistics, biases), executed by `slt_deploy.sparse`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slt_deploy.atomic import atomic_path
from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.export.checks import check_parity
from slt_deploy.export.network import Deployable
from slt_deploy.export.request import ExportRequest
from slt_deploy.headers import safetensors_header, seal, verify_seal
from slt_deploy.init import InitSpec
from slt_deploy.masking.surgery import gateable, normalisation_
from slt_deploy.models import ModelSpec, create_model
from slt_deploy.sparse import csr_from_dense, sparse_layer

CSR_FORMAT = "slt-deploy/csr"
CSR_VERSION = 2  # 2: sealed with a SHA-256 of header and tensors
PARTS = ("crow_indices", "col_indices", "values")


def write(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """`csr`: written, loaded back and run by the sparse runtime against PyTorch."""
    write_file(net, request.out)
    model, _, _ = load(request.out)
    with torch.no_grad():
        got, expected = model(inputs), net.model(inputs)
    parity = {
        "runtime": "torch.sparse (CSR)",
        "samples": len(inputs),
        "max_abs_diff": float((got - expected).abs().max()),
        "max_abs_logit": float(expected.abs().max()),
        "same_predictions": float((got.argmax(1) == expected.argmax(1)).float().mean()),
    }
    return {
        "parity": check_parity(parity, request.out, "the CSR runtime"),
        "index_dtype": "int32",
    }


def write_file(net: Deployable, out: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(net.masks):
        weight = net.model.get_submodule(name).weight.detach()
        for part, tensor in csr_from_dense(weight).items():
            tensors[f"csr.{name}.{part}"] = tensor
    for name, tensor in net.extra_tensors().items():
        tensors[f"extra.{name}"] = tensor.cpu().contiguous()
    meta = {
        "format": CSR_FORMAT,
        "version": CSR_VERSION,
        "model": net.model_spec.to_dict(),
        "data": net.data.to_dict(),
        "init": net.init.to_dict(),
        "layers": sorted(net.masks),
        "affine_bn": net.affine_bn,
        "source": net.source,
    }
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=seal(meta, tensors))


def read_metadata(path: Path) -> dict:
    return safetensors_header(path, CSR_FORMAT, CSR_VERSION, "CSR artifact")


def load(path: str | Path) -> tuple[nn.Module, DataSpec, dict]:
    """The sparse network of a CSR artifact (eval mode), its data spec and metadata."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
        data = DataSpec.from_dict(meta["data"])
        spec = ModelSpec.from_dict(meta["model"])
        InitSpec.from_dict(meta["init"])
        layers = [str(n) for n in meta["layers"]]
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise SltError(f"{path}: damaged CSR artifact ({exc})") from None
    verify_seal(meta, tensors, path, "CSR artifact")
    with torch.device("meta"):  # shapes only: dense weights would double the peak memory
        model = normalisation_(create_model(spec, data), bool(meta.get("affine_bn", False)))
    names = [n for n, m in model.named_modules() if n and gateable(m, n)]
    if sorted(names) != sorted(layers):
        raise SltError(f"{path}: layers do not match the model {spec.name!r}")
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    for name in names:
        dense = model.get_submodule(name)
        try:
            parts = {p: tensors[f"csr.{name}.{p}"] for p in PARTS}
        except KeyError:
            raise SltError(f"{path}: CSR tensors of {name!r} are missing") from None
        model.set_submodule(name, sparse_layer(dense, parts, extra.pop(f"{name}.bias", None)))
    try:
        model.load_state_dict(extra, strict=True, assign=True)
    except RuntimeError as exc:
        raise SltError(f"{path}: tensors do not fit the model ({exc})") from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise SltError(f"{path}: the artifact lacks some of the model's tensors")
    return model.eval(), data, meta
