"""One optimizer step of a search and everything it needs, built in one place so the search
loop and the cost benchmark run the same code (bench/step_cost.py)."""

from __future__ import annotations

import functools
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from slt_deploy.data import DataSpec
from slt_deploy.search import budget
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import default_sharpen_start, default_sigma, default_sigma_start
from slt_deploy.search.distributed import World, wrap
from slt_deploy.search.methods import METHODS, Method, build_optimizer
from slt_deploy.search.sparsity import SparsityController, control_interval
from slt_deploy.search.stats import (
    MaskState,
    add_penalty_grad_,
    gate_families,
    mask_state,
    penalty_balance,
)
from slt_deploy.search.ticket import build_search_model


class LossTemperature(nn.Module):
    """A learned scale of the logits inside the loss only.

    Without biases, a ReLU network is positively homogeneous: a mask that keeps a fraction d
    of a layer's weights shrinks its output by about √d, and the logits of a 90%-sparse
    three-layer net come out ~30x smaller than at init, so cross-entropy trains at a wrong
    temperature. A positive scalar on the logits changes no prediction (argmax), so the
    deployed ticket does not contain it; it only lets the loss see calibrated logits
    (+0.9 points for gates at 90% on MNIST, docs/search.md).
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.log_temperature.exp()


class NonFiniteError(Exception):
    """A NaN or Inf in the loss, a gradient or the trained parameters."""

    def __init__(self, what: str, step: int) -> None:
        super().__init__(what, step)
        self.what, self.step = what, step


def learning_rate(base: float, step: int, total: int, schedule: str) -> float:
    if schedule == "constant":
        return base
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / total))


@dataclass
class Trainer:
    config: SearchConfig
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    controller: SparsityController
    temperature: LossTemperature | None
    total_steps: int
    autocast: AbstractContextManager
    world: World = field(default_factory=World)
    forward_model: nn.Module | None = None  # the DDP wrapper under torchrun, else the model

    def __post_init__(self) -> None:
        if self.forward_model is None:
            self.forward_model = self.model
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.control_every = control_interval(self.total_steps)
        self.skipped_batches = 0
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        tensors = [*self.model.parameters(), *self.model.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
        self.channels_last = channels_last(self.config, device)

    def parameters_finite(self) -> bool:
        return bool(torch.stack([p.detach().isfinite().all() for p in self.trainable]).all())

    def _finite_flags(self, loss: torch.Tensor) -> tuple[bool, bool]:
        """(loss finite, every gradient finite), read from the device in one transfer. A sum is
        finite whenever all its terms are, and one vectorised sum per gradient costs a fraction
        of isfinite().all() (abs, two compares and a reduction: ~25x slower on a CPU); only a
        non-finite sum, which finite but huge terms can also give, is checked element-wise."""
        grads = [p.grad for p in self.trainable if p.grad is not None]
        sums = [loss.detach().reshape(()).float(), *(g.sum().float() for g in grads)]
        finite = torch.isfinite(torch.stack(sums)).tolist()
        suspects = [g for g, ok in zip(grads, finite[1:], strict=True) if not ok]
        return bool(finite[0]), all(bool(g.isfinite().all()) for g in suspects)

    def _non_finite(self, what: str, step: int) -> None:
        """--on-nan: skip the batch (if the state itself is still finite) or stop."""
        if self.config.on_nan == "skip-batch" and self.parameters_finite():
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_batches += 1
            return
        raise NonFiniteError(what, step)

    def step(
        self, x: torch.Tensor, y: torch.Tensor, step: int, weight: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, MaskState | None] | None:
        """One optimizer step: CE on a relaxed sample, the expected-L0 penalty added as its
        analytic gradient, and (every `control_every` steps) a sparsity-control update.
        `weight` scales this rank's loss by its share of the global batch (distributed.py).
        None: the batch gave a non-finite loss or gradient and was skipped (--on-nan)."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = learning_rate(base, step, self.total_steps, self.config.schedule)
        if self.config.sigma_final is not None:
            set_sigma_(self.model, annealed_sigma(self.config, step, self.total_steps))
        if self.config.temperature_final is not None:
            set_temperature_(self.model, annealed_temperature(self.config, step, self.total_steps))
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = self.forward_model(x).float()
            scaled = logits if self.temperature is None else self.temperature(logits)
            loss = F.cross_entropy(scaled, y)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()  # harmless on a NaN loss
        if self.temperature is not None:
            self.world.average_gradients_(list(self.temperature.parameters()))
        # one host-device synchronisation per step for both checks (each is a GPU stall)
        loss_ok, grads_ok = self._finite_flags(loss)
        if self.world.any(not loss_ok, x.device):
            return self._non_finite("loss", step)
        if not grads_ok:
            return self._non_finite("gradient", step)
        controller = self.controller
        shift = self.config.budget == "shift"
        if self.method.penalised and not shift:
            if controller.needs_scale:
                controller.scale = penalty_balance(self.model)
            if controller.lam:
                add_penalty_grad_(self.model, controller.lam)
        self.optimizer.step()
        if self.config.gate_bound:
            bound_gates_(self.model, self.config.gate_bound * self.config.sigma)
        masks = None
        last = step + 1 == self.total_steps  # the shift also places the final mask exactly
        if self.method.penalised and ((step + 1) % self.control_every == 0 or (shift and last)):
            progress = step / self.total_steps
            if shift:
                budget.shift_to_density_(self.model, controller.target_at(progress))
            masks = mask_state(self.model)
            if not shift:
                controller.update(
                    masks.binary_density, masks.soft_density, progress, self.control_every
                )
        return loss.detach(), logits.detach(), masks

    def state_dict(self) -> dict:
        """What a checkpoint needs besides the ticket tensors."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "controller": self.controller.state_dict(),
            "temperature": self.temperature.state_dict() if self.temperature else {},
            "skipped_batches": self.skipped_batches,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller.load_state_dict(state["controller"])
        if self.temperature is not None:
            self.temperature.load_state_dict(state["temperature"])
        self.skipped_batches = int(state.get("skipped_batches", 0))


def channels_last(config: SearchConfig, device: torch.device) -> bool:
    return config.channels_last and device.type == "cuda"


def cosine_anneal(
    start: float, end: float, step: int, total_steps: int, begin: float = 0.0
) -> float:
    """A cosine from `start` to `end` over the fraction [begin, 1] of training (`start` before
    it), a function of the step alone, so a resumed run trains with the same values as an
    uninterrupted one."""
    progress = min(1.0, step / max(1, total_steps))
    progress = max(0.0, (progress - begin) / (1.0 - begin))
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def annealed_sigma(config: SearchConfig, step: int, total_steps: int) -> float:
    """σ at `step`: --sigma (or its default) until --sigma-start, then down to --sigma-final."""
    sigma = default_sigma(config) if config.sigma is None else config.sigma
    start = default_sigma_start(config) if config.sigma_start is None else config.sigma_start
    return cosine_anneal(sigma, config.sigma_final, step, total_steps, start)


def annealed_temperature(config: SearchConfig, step: int, total_steps: int) -> float:
    """The stg gate temperature t at `step`: 1 until --sharpen-start, then down to
    --temperature-final. Starting after the sparsity ramp keeps the gates soft while the
    controller still moves the density: gates that decide during the ramp stop receiving
    penalty gradient and the controller loses the target (docs/search.md)."""
    start = default_sharpen_start(config) if config.sharpen_start is None else config.sharpen_start
    return cosine_anneal(1.0, config.temperature_final, step, total_steps, start)


def set_temperature_(model: nn.Module, temperature: float) -> None:
    for gate in gate_families(model):
        if hasattr(gate, "temperature"):
            gate.temperature = temperature


@torch.no_grad()
def bound_gates_(model: nn.Module, radius: float) -> None:
    """Project every stg mean back into [τ − radius, τ + radius] after a step. Unbounded,
    a gate the penalty drives far below τ is dead: its samples are always clipped to 0, so
    neither the loss nor a negative λ can reopen it (MNIST at 98%: μ ≈ −1.9, P(open) ≈ 1e-6,
    and the density stuck above target with λ at −300; docs/search.md)."""
    for gate in gate_families(model):
        if hasattr(gate, "gate_mean"):
            tau = gate.config.threshold
            gate.gate_mean.clamp_(tau - radius, tau + radius)


def set_sigma_(model: nn.Module, sigma: float) -> None:
    """Every gate reads σ from its (frozen) GateConfig: sampling, P(open) and the penalty
    gradient move together."""
    for gate in gate_families(model):
        gate.config = replace(gate.config, sigma=sigma)


def to_channels_last(model: nn.Module) -> nn.Module:
    """NHWC weights for tensor-core convolutions, and every trainable parameter's gradient laid
    out exactly as the parameter: fused Adam compares strides, and a gradient computed
    elementwise from a contiguous tensor comes back NCHW (1x1 convolutions, whose two layouts
    both count as contiguous, included)."""
    model = model.to(memory_format=torch.channels_last)
    for param in model.parameters():
        if param.requires_grad and param.dim() == 4:
            param.register_hook(functools.partial(_strided_like, param))
    return model


def _strided_like(param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    if grad.stride() == param.stride():
        return grad
    out = torch.empty_strided(param.shape, param.stride(), dtype=grad.dtype, device=grad.device)
    return out.copy_(grad)


def uses_temperature(config: SearchConfig) -> bool:
    if config.loss_temperature == "auto":
        return config.method != "dense"  # dense learns its own scale
    return config.loss_temperature == "learned"


def build_trainer(
    config: SearchConfig,
    data: DataSpec,
    total_steps: int,
    device: torch.device,
    world: World | None = None,
) -> Trainer:
    """Seed, build the network with the method's surgery, and everything that trains it."""
    torch.manual_seed(config.seed)
    model = build_search_model(config, data).to(device).train()
    if channels_last(config, device):
        model = to_channels_last(model)
    method = METHODS.get(config.method)
    temperature = LossTemperature().to(device) if uses_temperature(config) else None
    optimizer = build_optimizer(model, config, extra=temperature)
    controller = SparsityController.create(
        config.target_sparsity if method.penalised else None,
        config.l0,
        config.controller_rate,
        ramp=config.sparsity_ramp,
        windup_reset=bool(config.windup_reset),
    )
    if config.budget == "shift":  # ramps from dense (the penalty: from its first reading)
        controller.start_density = 1.0
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and config.amp
        else nullcontext()
    )
    world = world or World()
    forward_model = wrap(model, world, device)
    return Trainer(config, model, method, optimizer, controller, temperature, total_steps, autocast,
                   world, forward_model)  # fmt: skip
