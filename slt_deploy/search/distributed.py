"""Scale-out under `torchrun`: data parallel over ranks that share one seed.

Every rank regenerates the same frozen network from the seed (checked: the weights' SHA-256 is
compared across ranks), draws the same gate noise and the same global batch, and trains on its
slice of it; DistributedDataParallel averages the mask gradients. With each rank's loss
weighted by its slice's share of the batch, the update is that of one process on the whole
batch, up to the order of floating-point sums. Rank 0 alone holds the run directory's lock and
writes; its refusals reach every rank, so no rank waits for a peer that has given up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from slt_deploy.errors import SltError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's slice of a global batch and its loss weight (slice share x ranks)."""
        if not self.distributed:
            return x, y, 1.0
        bounds = [len(y) * r // self.size for r in range(self.size + 1)]
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        return x[lo:hi], y[lo:hi], (hi - lo) * self.size / len(y)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on one (a collective decision: no rank left behind)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.distributed:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def average_gradients_(self, parameters: list[torch.nn.Parameter]) -> None:
        """For parameters outside the DDP module (the loss temperature)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.size

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def share_error(self, message: str | None, device: torch.device) -> None:
        """Rank 0's error (or None) raised on every rank, as one line each."""
        if self.distributed:
            message = self._broadcast_text(message or "", device) or None
        if message:
            raise SltError(message)

    def _broadcast_text(self, text: str, device: torch.device) -> str:
        import torch.distributed as dist

        data = text.encode() if self.main else b""
        length = torch.tensor([len(data)], dtype=torch.int64, device=device)
        dist.broadcast(length, src=0)
        buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
        if self.main and len(data):
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        if len(buffer):
            dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().tolist()).decode()

    def check_same_weights(self, checksum: str, device: torch.device) -> None:
        """Ranks that disagree on the frozen weights would train different networks."""
        if not self.distributed:
            return
        if self._broadcast_text(checksum, device) != checksum:
            raise SltError(
                f"rank {self.rank} regenerated other frozen weights than rank 0 "
                "(different slt-deploy or torch versions across nodes?)"
            )


def init_world(device: torch.device) -> World:
    """The torchrun world from its environment, or a single process without one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_available():
        raise SltError("this torch build has no torch.distributed: run without torchrun")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def close_world(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DDP around the model: gradients of the masks averaged across ranks during backward.
    Buffers are not re-broadcast every step: the frozen weights are buffers, identical by
    seed, and BatchNorm statistics are recalibrated deterministically on every rank."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
