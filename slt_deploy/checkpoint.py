"""Checkpoint files without pickle: nested state (optimizer, controller, RNG, history) split
into tensors, stored as safetensors, and a JSON skeleton in the header that says where each
tensor goes, sealed by a SHA-256 like every other slt-deploy file. Loading parses JSON and
tensor bytes, nothing else: a hostile checkpoint cannot run code."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from slt_deploy.atomic import atomic_path
from slt_deploy.errors import SltError
from slt_deploy.headers import safetensors_header, seal, verify_seal

CHECKPOINT_FORMAT = "slt-deploy/checkpoint"
CHECKPOINT_VERSION = 2  # 1 was a torch.save zip; 2 is sealed safetensors
SCALARS = (str, int, float, bool, type(None))


def _flatten(obj, tensors: dict[str, torch.Tensor]):
    """A JSON skeleton of `obj`; tensors go to `tensors` under generated names."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"t": name}
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint keys must be str or int, got {type(key).__name__}")
        return {"d": [[key, _flatten(value, tensors)] for key, value in obj.items()]}
    if isinstance(obj, list | tuple):
        return {"l": [_flatten(value, tensors) for value in obj]}
    if isinstance(obj, SCALARS):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _unflatten(node, tensors: dict[str, torch.Tensor]):
    if isinstance(node, SCALARS):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((kind, value),) = node.items()
        if kind == "t" and isinstance(value, str) and value in tensors:
            return tensors[value]
        if kind == "d" and isinstance(value, list):
            return {_key(pair): _unflatten(pair[1], tensors) for pair in value}
        if kind == "l" and isinstance(value, list):
            return [_unflatten(v, tensors) for v in value]
    raise ValueError("malformed checkpoint skeleton")


def _key(pair) -> str | int:
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str | int)):
        raise ValueError("malformed checkpoint skeleton")
    return pair[0]


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` (nested dicts/lists of tensors and JSON scalars) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    meta["state"] = _flatten(state, tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=seal(meta, tensors))


def load_checkpoint(path: Path) -> dict:
    meta = safetensors_header(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "checkpoint")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SltError(f"{path}: damaged checkpoint ({exc})") from None
    verify_seal(meta, tensors, path, "checkpoint")
    try:
        state = _unflatten(meta["state"], tensors)
    except (KeyError, ValueError, TypeError, RecursionError):
        raise SltError(f"{path}: damaged checkpoint (malformed state)") from None
    if not isinstance(state, dict):
        raise SltError(f"{path}: damaged checkpoint (malformed state)")
    return state
