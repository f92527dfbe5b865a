"""The deployable network: frozen weights with the binary mask folded in, as plain layers.

Every format is written from a `Deployable`, whether it came from a search's ticket or was
rebuilt from an `.slt` file (seed + masks), so every artifact computes the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.export.masks import binary_masks, gate_scores, project_24
from slt_deploy.init import InitSpec, frozen_weight
from slt_deploy.masking.fold import fold
from slt_deploy.masking.paths import remove_dead_paths
from slt_deploy.masking.shrink import DEFAULT_CHANNEL_MULTIPLE, measure
from slt_deploy.masking.shrink import shrink as shrink_network
from slt_deploy.masking.surgery import gateable, normalisation_
from slt_deploy.models import ModelSpec, create_model
from slt_deploy.search.ticket import Ticket, build_model


@dataclass
class Deployable:
    """A plain eval-mode network (Linear/Conv2d holding W ⊙ B) plus what describes it."""

    model: nn.Module
    masks: dict[str, torch.Tensor]
    data: DataSpec
    model_spec: ModelSpec
    init: InitSpec
    affine_bn: bool = False
    source: dict = field(default_factory=dict)  # method, threshold, metrics of the search

    def per_layer(self) -> dict[str, dict]:
        out = {}
        for name, mask in self.masks.items():
            total, kept = mask.numel(), int(mask.sum())
            out[name] = {"total": total, "kept": kept, "sparsity": 1.0 - kept / total}
        return out

    def totals(self) -> tuple[int, int]:
        layers = self.per_layer().values()
        return sum(v["total"] for v in layers), sum(v["kept"] for v in layers)

    @property
    def channel_ticket(self) -> bool:
        return str(self.source.get("granularity", "")).startswith("channel")

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """State that is neither a gated weight nor regenerated: BN statistics, biases."""
        gated = {f"{name}.weight" for name in self.masks}
        return {
            k: v.detach().contiguous() for k, v in self.model.state_dict().items() if k not in gated
        }


def from_ticket(
    ticket: Ticket,
    threshold: float | None = None,
    sparsity: float | None = None,
    pattern_24: bool = False,
    keep_dead_paths: bool = False,
) -> Deployable:
    """The deployable network of a ticket; `pattern_24` projects the mask to 2:4 where it is
    not (keeping the 2 kept weights with the largest gate values per group). Kept weights on
    dead paths are taken out of the mask (masking/paths.py): the same function, fewer weights;
    `keep_dead_paths` leaves the searched mask whole (bench/dead_paths.py compares the two)."""
    if ticket.config.method == "dense":
        raise SltError("a dense-training run is not a ticket: there is no mask to export")
    c = ticket.config
    if c.granularity.startswith("channel") and (
        threshold is not None or sparsity is not None or pattern_24
    ):
        raise SltError(
            "a channel ticket's mask is its channels: --threshold, --sparsity and --format 2:4 "
            "apply to unstructured tickets"
        )
    model = build_model(ticket)
    masks = binary_masks(model, threshold, sparsity)
    projected: list[str] = []
    if pattern_24:
        masks, projected = project_24(masks, gate_scores(model))
    source = {
        "method": c.method,
        "gate": c.gate if c.method == "gates" else None,
        "threshold": c.threshold if threshold is None else threshold,
        "exact_sparsity": sparsity,
        "search_metrics": ticket.metrics,
        "data": c.data,
        "data_dir": c.data_dir,
        "granularity": c.granularity,
        "projected_to_24": projected,
    }
    plain = fold(model, masks)
    removed: dict[str, int] = {}
    if not keep_dead_paths:
        masks, removed = remove_dead_paths(plain, masks, tuple(ticket.data.input_shape))
    source["dead_path_weights_removed"] = removed
    if removed:
        plain = fold(model, masks)
    return Deployable(
        plain, masks, ticket.data, ticket.model_spec, ticket.init, c.affine_bn, source
    )


def rebuild(
    model_spec: ModelSpec,
    data: DataSpec,
    init: InitSpec,
    masks: dict[str, torch.Tensor],
    extra: dict[str, torch.Tensor],
    affine_bn: bool,
    source: dict,
) -> Deployable:
    """The same Deployable from seed + masks (+ BN statistics, biases): the .slt path."""
    model = normalisation_(create_model(model_spec, data), affine_bn)
    names = [n for n, m in model.named_modules() if n and gateable(m, n)]
    if sorted(names) != sorted(masks):
        raise SltError("the masks do not match the model's layers")
    for name in names:
        layer = model.get_submodule(name)
        mask = masks[name]
        if tuple(mask.shape) != tuple(layer.weight.shape):
            raise SltError(
                f"mask {name!r} is {tuple(mask.shape)}, the layer needs {tuple(layer.weight.shape)}"
            )
        weight = frozen_weight(init, name, tuple(layer.weight.shape)) * mask.float()
        layer.weight = nn.Parameter(weight, requires_grad=False)
        bias = extra.get(f"{name}.bias")
        layer.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)
    expected = {k for k in model.state_dict() if not any(k == f"{n}.weight" for n in names)}
    if set(extra) != expected:
        missing = sorted(expected - set(extra))[:3]
        unexpected = sorted(set(extra) - expected)[:3]
        raise SltError(
            f"artifact tensors do not fit the model (missing {missing}, unexpected {unexpected})"
        )
    model.load_state_dict(extra, strict=False)
    for param in model.parameters():
        param.requires_grad_(False)
    return Deployable(model.eval(), masks, data, model_spec, init, affine_bn, source)


def runtime_network(
    net: Deployable, shrink: bool = True, channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE
) -> tuple[nn.Module, dict]:
    """The network a dense runtime (ONNX, TensorRT) gets, and the report of what shrinking
    removed: every unit whose output is always zero gone (masking/shrink.py; kept counts
    rounded up to `channel_multiple`) unless `shrink` is off. A channel ticket loses its closed
    channels and its closed input features; an unstructured one the units its dead paths left
    empty (masking/paths.py), with its input features kept whole (a Gather costs more there).
    `bench` calls this too, with the options an export report records, so that every back-end
    runs the network the ONNX file holds."""
    unstructured = net.source.get("granularity", "unstructured") == "unstructured"
    if not net.channel_ticket and not (shrink and unstructured):
        return net.model, {}
    shape = tuple(net.data.input_shape)
    small, kept = net.model, {}
    try:
        if shrink:
            small, kept = shrink_network(
                net.model, shape, channel_multiple, gather_inputs=net.channel_ticket
            )
    except SltError:  # torch.fx cannot read the graph: an unstructured ticket keeps its shapes
        if net.channel_ticket:
            raise
        return net.model, {}
    before, after = measure(net.model, shape), measure(small, shape)
    return small, {
        "shrunk": {
            "applied": shrink,
            "before": before.to_dict(),
            "after": after.to_dict(),
            "params_ratio": after.params / before.params,
            "macs_ratio": after.macs / before.macs,
            "channels_kept": kept,
            "channel_multiple": channel_multiple,
        }
    }
