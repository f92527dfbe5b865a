"""The JSON header every slt-deploy file carries: read it and check format and version, once
for tickets, CSR artifacts and .slt files alike."""

from __future__ import annotations

import json
from pathlib import Path

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
