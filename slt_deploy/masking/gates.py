"""Gate families: continuous relaxations of Bernoulli gates with an expected-L0 penalty.

Each family owns its parameter tensor and gives three things (docs/design.md, "Method"):
`sample` (the relaxed gate z used in training, differentiable, no straight-through),
`open_probability` (P(z > 0) per gate; its sum is E[L0]) and `deterministic_gate` (ẑ).
The deployed mask is always `binary_mask = ẑ > τ`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from slt_deploy.masking.kernels import kernels, stg_forward
from slt_deploy.registry import Registry


@dataclass(frozen=True)
class GateConfig:
    """The gate family and its constants; `init` is μ₀ (stg) or log α₀ (hard-concrete)."""

    family: str = "stg"
    sigma: float = 0.5
    init: float | None = None
    threshold: float = 0.5
    compile: bool = True  # stg: fused compiled kernels (kernels.py); same maths either way
    noise: str = "table"  # stg noise: "table" (shared noise table) or "fresh" (randn per step)
    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GateConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class GateFamily(nn.Module):
    """One gate per element of `shape`; subclasses define the relaxation."""

    param_name: str = "gate"
    # Adam's learning rate when --lr is not given; None: the gates method's default. The
    # families parametrise differently (μ in [0, 1] vs log α over several units), so one
    # rate does not suit both (docs/search.md, "Defaults").
    default_lr: float | None = None
    default_sigma: float = GateConfig.sigma  # stg's noise when --sigma is not given

    default_init: float = 0.0  # the parameter's value when config.init is None

    def __init__(
        self, shape: tuple[int, ...], config: GateConfig, noise: NoiseTable | None = None
    ) -> None:
        super().__init__()
        self.config = config
        init = self.default_init if config.init is None else config.init
        setattr(self, self.param_name, nn.Parameter(torch.full(shape, float(init))))

    @property
    def parameter(self) -> nn.Parameter:
        return getattr(self, self.param_name)

    def sample(self) -> torch.Tensor:
        raise NotImplementedError

    def open_probability(self) -> torch.Tensor:
        raise NotImplementedError

    def open_probability_grad(self) -> torch.Tensor:
        """∂P(open)/∂parameter, analytically: the penalty is applied as this gradient, which
        costs a fraction of an autograd graph through erf (bench/step_cost.py)."""
        raise NotImplementedError

    def deterministic_gate(self) -> torch.Tensor:
        raise NotImplementedError

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """W ⊙ z with a fresh relaxed sample z."""
        return weight * self.sample()

    @torch.no_grad()
    def add_penalty_grad_(self, coefficient: float) -> None:
        """Add coefficient · ∂P(open)/∂θ to the parameter's gradient (the expected-L0
        penalty, applied analytically instead of through an autograd graph)."""
        param = self.parameter
        penalty = self.open_probability_grad().mul_(coefficient)
        param.grad = penalty if param.grad is None else param.grad.add_(penalty)

    def binary_mask(self) -> torch.Tensor:
        return self.deterministic_gate() > self.config.threshold

    def parameter_at_threshold(self) -> float:
        """The parameter value at which ẑ = τ: the mask is `parameter > this` (ẑ is monotone)."""
        raise NotImplementedError


GATES: Registry[type[GateFamily]] = Registry("gate family")


class NoiseTable:
    """A shared table of N(0, 1) draws; each call returns a window at a random offset.

    Drawing fresh Gaussians for every weight at every step was the largest single cost of a
    gate step on CPU (bench/step_cost.py); a window into one table is a zero-copy view. This is
    the shared noise table of Salimans et al. (2017, evolution strategies). Per gate, the
    draws across steps come from ~`spare` distinct table positions, so they are iid for all
    practical purposes (a 7,000-step search repeats a value a handful of times in 2^20).
    The table is regenerated from the seed, never stored, and kept outside the module tree
    (one copy for all layers; it follows the gates to their device on first use).
    """

    def __init__(self, size: int, seed: int, spare: int = 1 << 20) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.randn(size + spare, generator=generator)
        self.spare = spare

    def window(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        if self.table.device != device:
            self.table = self.table.to(device)
        count = math.prod(shape)
        offset = int(torch.randint(0, self.spare + 1, (1,)))
        return self.table[offset : offset + count].view(shape)


class _StgMaskedWeight(torch.autograd.Function):
    """W ⊙ clip(τ + (μ − τ + σε)/t, 0, 1) and its exact gradient (1/t inside (0, 1), 0 where
    clipped: no straight-through), the gradient as one fused pointwise kernel (kernels.py)."""

    @staticmethod
    def forward(
        ctx,
        gate_mean: torch.Tensor,
        weight: torch.Tensor,
        noise: torch.Tensor,
        sigma: float,
        temperature: float,
        threshold: float,
        backward: Callable,
    ) -> torch.Tensor:
        masked, pre_clip = stg_forward(gate_mean, weight, noise, sigma, temperature, threshold)
        ctx.save_for_backward(weight, pre_clip)
        ctx.backward, ctx.scale = backward, 1.0 / temperature
        return masked

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, pre_clip = ctx.saved_tensors
        flat = (grad.reshape(-1), weight.reshape(-1), pre_clip.reshape(-1))
        grad_mean = ctx.backward(*flat, ctx.scale)
        # channels-last parameters get their own strides back in trainer.to_channels_last
        return grad_mean.view(weight.shape), None, None, None, None, None, None


@GATES.register("stg")
class StochasticGate(GateFamily):
    """Gaussian stochastic gates (Yamada et al. 2020): z = clip(μ + ε, 0, 1), ε ~ N(0, σ²).

    `temperature` t (1 = the paper's gate) sharpens the relaxation around the threshold τ:
    z = clip(τ + (μ − τ + ε)/t, 0, 1). The binary mask μ > τ is the same for every t, so the
    ticket does not depend on it; as t → 0 every sample is 0 or 1 and the network trained
    converges to a binary one (docs/search.md, "Sharpening"). P(open) = Φ((μ − τ + τt)/σ).
    Annealed by the trainer (`--temperature-final`), never stored: a plain attribute.
    """

    param_name = "gate_mean"
    default_init = 0.5
    # Unstructured stg gates sharpen by default (t → 0.05 from 0.35 of training, where the
    # sparsity ramp ends), with less noise (σ 0.25, annealed to 0.1 over the same span), means
    # kept within τ ± 3σ and a faster rate. Unbounded, σ 0.25 left gates dead far below τ and
    # missed high targets; with the bound it is the best measured on LeNet/MNIST and on the
    # Conv-4/CIFAR-10 proxy
    # (docs/search.md, "Dead gates"). Channel and 2:4 gates were not measured so: t = 1, σ 0.5.
    default_temperature_final = 0.05
    sharpened_lr = 0.03
    sharpened_sigma = 0.25
    sharpened_sigma_final = 0.1
    sharpened_sigma_start = 0.35
    sharpened_start = 0.35  # --sharpen-start; 0.5 elsewhere (docs/search.md, "Windup")
    sharpened_bound = 3.0

    def __init__(
        self, shape: tuple[int, ...], config: GateConfig, noise: NoiseTable | None = None
    ) -> None:
        super().__init__(shape, config)
        self.noise_table = noise  # shared by all layers; a plain object, never in the state dict
        self.temperature = 1.0

    def _effective(self) -> tuple[torch.Tensor, float]:
        """(mean, σ) of the equivalent t = 1 gate: τ + (μ − τ)/t and σ/t (differentiable)."""
        t = self.temperature
        if t == 1.0:
            return self.gate_mean, self.config.sigma
        tau = self.config.threshold
        return (self.gate_mean - tau) * (1.0 / t) + tau, self.config.sigma / t

    def _open_offset(self) -> float:
        """a − μ for a = μ − τ + τt, with P(open) = Φ(a/σ) (0 at t = 1)."""
        t = self.temperature
        return 0.0 if t == 1.0 else self.config.threshold * (t - 1.0)

    def _open_argument(self) -> torch.Tensor:
        offset = self._open_offset()
        return self.gate_mean if offset == 0.0 else self.gate_mean + offset

    def _draw(self) -> torch.Tensor:
        table = self.noise_table
        if table is None:
            return torch.randn_like(self.gate_mean)
        mean = self.gate_mean
        return table.window(mean.shape, mean.device).to(mean.dtype)

    def sample(self) -> torch.Tensor:
        mean, sigma = self._effective()
        return (mean + sigma * self._draw()).clamp(0.0, 1.0)  # clip(μ + ε, 0, 1)

    def open_probability(self) -> torch.Tensor:
        # P(z > 0) = Φ(a/σ); the penalty is λ Σ P(open).
        return torch.special.ndtr(self._open_argument() / self.config.sigma)

    def open_probability_grad(self) -> torch.Tensor:
        # dΦ(a/σ)/dμ = φ(a/σ)/σ = exp(−a²/2σ²) / (σ√(2π)), a = μ − τ + τt (a = μ at t = 1)
        sigma = self.config.sigma
        density = self._open_argument().detach().square().mul_(-0.5 / sigma**2).exp_()
        return density.mul_(1.0 / (sigma * math.sqrt(2.0 * math.pi)))

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        c = self.config
        backward = kernels(c.compile)["backward"]
        return _StgMaskedWeight.apply(
            self.gate_mean, weight, self._draw(), c.sigma, self.temperature, c.threshold, backward
        )

    def add_penalty_grad_(self, coefficient: float) -> None:
        mean = self.gate_mean
        penalty = kernels(self.config.compile)["penalty"]
        grad = mean.grad if mean.grad is not None else torch.zeros_like(mean)
        coef = torch.tensor(coefficient, dtype=mean.dtype, device=mean.device)
        with torch.no_grad():
            flat = penalty(
                grad.reshape(-1),
                mean.detach().reshape(-1),
                coef,
                self.config.sigma,
                self._open_offset(),
            )
        mean.grad = flat.view(mean.shape)

    def deterministic_gate(self) -> torch.Tensor:
        mean, _ = self._effective()
        return mean.clamp(0.0, 1.0)  # ẑ = clip(μ, 0, 1) at t = 1

    def parameter_at_threshold(self) -> float:
        return self.config.threshold  # μ > τ ⇔ ẑ > τ at every temperature


@GATES.register("hard-concrete")
class HardConcreteGate(GateFamily):
    """Hard-concrete gates (Louizos et al. 2018), stretched to (γ, ζ) and clipped to [0, 1]."""

    param_name = "log_alpha"
    default_lr = 0.03
    default_init = 2.0  # sigmoid(2)·1.2 − 0.1 ≈ 0.96: gates start open, as stg's μ₀ = 0.5 does

    def sample(self) -> torch.Tensor:
        c = self.config
        la = self.log_alpha
        u = torch.rand(la.shape, device=la.device, dtype=la.dtype)
        u = u.clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / c.beta)
        return (s * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)  # z = clip(s(ζ−γ)+γ, 0, 1)

    def open_probability(self) -> torch.Tensor:
        c = self.config
        return torch.sigmoid(self.log_alpha - c.beta * math.log(-c.gamma / c.zeta))

    def open_probability_grad(self) -> torch.Tensor:
        p = self.open_probability().detach()
        return p * (1.0 - p)  # sigmoid' = s(1 − s)

    def deterministic_gate(self) -> torch.Tensor:
        c = self.config
        return (torch.sigmoid(self.log_alpha) * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)

    def parameter_at_threshold(self) -> float:
        c = self.config
        p = (c.threshold - c.gamma) / (c.zeta - c.gamma)
        return math.log(p / (1.0 - p))  # sigmoid(log α)(ζ − γ) + γ = τ
