"""The 2:4 semi-structured pattern: in every group of 4 consecutive input channels (at each
output channel and kernel position) at most 2 weights are kept — what sparse tensor cores and
TensorRT's sparse-weights flag accelerate (Linear: groups of 4 along the input features)."""

from __future__ import annotations

import torch

GROUP, KEEP = 4, 2


def supports_24(shape: tuple[int, ...]) -> bool:
    """Only layers whose input channels split into whole groups of 4 can carry the pattern."""
    return len(shape) >= 2 and shape[1] % GROUP == 0


def _grouped(tensor: torch.Tensor) -> torch.Tensor:
    moved = tensor.movedim(1, -1)  # [out, (kh, kw,) in]
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // GROUP, GROUP)


def _ungrouped(grouped: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    moved_shape = like.movedim(1, -1).shape
    return grouped.reshape(moved_shape).movedim(-1, 1)


def keep_top2_of_4(scores: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the 2 largest scores in each group of 4 (ties: the earlier position)."""
    grouped = _grouped(scores)
    order = torch.sort(grouped, dim=-1, descending=True, stable=True).indices[..., :KEEP]
    keep = torch.zeros_like(grouped, dtype=torch.bool).scatter_(-1, order, True)
    return _ungrouped(keep, scores)


def is_24(mask: torch.Tensor) -> bool:
    return bool((_grouped(mask.to(torch.int32)).sum(-1) <= KEEP).all())


def compress_24(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The compressed 2:4 form: the 2 kept values of each group of 4 and their positions
    (0..3, stored one per uint8 here; hardware packs them into 2 bits)."""
    grouped = _grouped(weight)
    nonzero = grouped != 0
    # the kept positions first (stable), zero-valued slots of sparser groups fill in
    order = torch.sort(nonzero.to(torch.int8), dim=-1, descending=True, stable=True).indices
    positions = torch.sort(order[..., :KEEP], dim=-1).values
    values = torch.gather(grouped, -1, positions)
    return {"values": values.contiguous(), "indices": positions.to(torch.uint8).contiguous()}


def compressed_24_bytes(weight: torch.Tensor) -> int:
    """Bytes of the compressed 2:4 form as sparse hardware stores it: the kept values plus 2
    bits of position each. Reported, not written: TensorRT and torch's semi-structured
    tensors compress from the dense weights themselves, so a file of it would have no reader."""
    parts = compress_24(weight)
    return parts["values"].nbytes + (parts["indices"].numel() * 2 + 7) // 8
