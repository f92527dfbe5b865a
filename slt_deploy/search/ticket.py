"""The search artifact: a ticket is the config that regenerates the frozen network plus the
learned mask parameters and BatchNorm statistics, in one safetensors file (docs/design.md,
"Artifacts"). Frozen weights are never stored; they are regenerated and checked by SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slt_deploy.atomic import atomic_path
from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.headers import safetensors_header, seal, verify_seal
from slt_deploy.init import InitSpec, weight_checksum
from slt_deploy.masking.layers import frozen_weights
from slt_deploy.models import ModelSpec, create_model
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.methods import METHODS, gate_config, init_spec

TICKET_FORMAT = "slt-deploy/ticket"
TICKET_VERSION = 2  # 2: sealed with a SHA-256 of header and tensors
TICKET_FILE = "ticket.safetensors"


@dataclass
class Ticket:
    config: SearchConfig
    data: DataSpec
    tensors: dict[str, torch.Tensor]
    weight_checksum: str
    metrics: dict = field(default_factory=dict)

    @property
    def init(self) -> InitSpec:
        return init_spec(self.config)

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.config.model, self.config.model_kwargs)

    def metadata(self) -> dict:
        c = self.config
        return {
            "format": TICKET_FORMAT,
            "version": TICKET_VERSION,
            "model": self.model_spec.to_dict(),
            "init": self.init.to_dict(),
            "method": c.method,
            "gate": gate_config(c).to_dict(),
            "threshold": c.threshold,
            "granularity": c.granularity,
            "data": self.data.to_dict(),
            "weight_checksum": self.weight_checksum,
            "metrics": self.metrics,
            "config": c.to_dict(),
        }


def build_search_model(config: SearchConfig, data: DataSpec) -> nn.Module:
    """The network a search trains: the registry's model with the method's surgery applied."""
    # Parameters that are not regenerated from the seed (ViT's position embeddings, class
    # token, ...) come from torch's generator: seeded, so every rank and every rerun agrees.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_model(ModelSpec(config.model, config.model_kwargs), data)
    return METHODS.get(config.method).prepare(
        model, config, init_spec(config), tuple(data.input_shape)
    )


def ticket_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything in the state dict but the frozen weights (those regenerate from the seed)."""
    return {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith(".frozen_weight")
    }


def model_checksum(model: nn.Module) -> str:
    return weight_checksum(frozen_weights(model))


def save_ticket(path: str | Path, ticket: Ticket) -> None:
    with atomic_path(path) as tmp:
        save_file(ticket.tensors, str(tmp), metadata=seal(ticket.metadata(), ticket.tensors))


def resolve_ticket_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / TICKET_FILE
    if not path.is_file():
        raise SltError(f"no ticket at {path}")
    return path


def read_metadata(path: Path) -> dict:
    return safetensors_header(path, TICKET_FORMAT, TICKET_VERSION, "ticket")


def load_ticket(path: str | Path) -> Ticket:
    path = resolve_ticket_path(path)
    meta = read_metadata(path)
    try:
        config = SearchConfig.from_dict(meta["config"])
        data = DataSpec.from_dict(meta["data"])
        checksum = str(meta["weight_checksum"])
        metrics = dict(meta.get("metrics", {}))
    except (KeyError, TypeError, ValueError, SltError) as exc:
        raise SltError(f"{path}: ticket metadata is incomplete or malformed ({exc})") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SltError(f"{path}: cannot read ticket tensors: {exc}") from None
    verify_seal(meta, tensors, path, "ticket")
    return Ticket(config, data, tensors, checksum, metrics)


def build_model(ticket: Ticket) -> nn.Module:
    """Regenerate the frozen network, check its weights' checksum, load the learned tensors.
    The model comes back in eval mode, where masked layers apply the binary mask."""
    try:
        model = build_search_model(ticket.config, ticket.data)
    except SltError as exc:
        raise SltError(f"cannot rebuild the ticket's model: {exc}") from None
    actual = model_checksum(model)
    if actual != ticket.weight_checksum:
        raise SltError(
            "regenerated weights do not match the ticket's checksum "
            f"({actual[:12]} != {ticket.weight_checksum[:12]}): the ticket was "
            "made by an incompatible weight generator or has been altered"
        )
    expected = ticket_tensors(model)
    for name, tensor in ticket.tensors.items():
        ref = expected.get(name)
        if ref is None:
            raise SltError(f"ticket holds an unexpected tensor {name!r}")
        if ref.shape != tensor.shape or ref.dtype != tensor.dtype:
            raise SltError(
                f"ticket tensor {name!r} is {tuple(tensor.shape)} {tensor.dtype}, "
                f"the model needs {tuple(ref.shape)} {ref.dtype}"
            )
    missing = sorted(set(expected) - set(ticket.tensors))
    if missing:
        raise SltError(f"ticket lacks tensor(s): {', '.join(missing[:5])}")
    model.load_state_dict(ticket.tensors, strict=False)
    return model.eval()
