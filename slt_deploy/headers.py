"""The JSON header every slt-deploy file carries: read it, check format and version, and check
the content digest that seals header and tensors, once for tickets, checkpoints, CSR artifacts
and .slt files alike."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError

from slt_deploy.errors import SltError

METADATA_KEY = "slt_deploy"


def check_header(raw: str | bytes | None, path: Path, fmt: str, version: int, what: str) -> dict:
    """Parse the header JSON and refuse anything but `fmt` at `version`."""
    try:
        meta = json.loads(raw) if raw is not None else None
    except (ValueError, TypeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise SltError(f"{path} is not an slt-deploy {what}")
    if meta.get("version") != version:
        raise SltError(
            f"{path}: {what} version {meta.get('version')} is not supported "
            f"(this slt-deploy reads version {version})"
        )
    return meta


def safetensors_header(path: Path, fmt: str, version: int, what: str) -> dict:
    """The slt-deploy header of a safetensors file, read without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise SltError(f"{path} is not a safetensors file: {exc}") from None
    return check_header(raw, path, fmt, version, what)


DIGEST_KEY = "sha256"


def content_digest(meta: dict, tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the header (less the digest) and every tensor's name, dtype, shape and
    bytes: one flipped bit anywhere in a file changes it."""
    digest = hashlib.sha256()
    header = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def seal(meta: dict, tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The safetensors metadata of an slt-deploy file: its header with the content digest."""
    sealed = {**meta, DIGEST_KEY: content_digest(meta, tensors)}
    return {METADATA_KEY: json.dumps(sealed, sort_keys=True)}


def verify_seal(meta: dict, tensors: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    if meta.get(DIGEST_KEY) != content_digest(meta, tensors):
        raise SltError(
            f"{path}: damaged {what}: its content does not match its SHA-256 "
            "(copy or export it again)"
        )
