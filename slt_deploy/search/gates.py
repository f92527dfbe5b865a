"""Gate families: continuous relaxations of Bernoulli gates with an expected-L0 penalty.

Each family owns its parameter tensor and gives three things (DESIGN.md, "Method"):
`sample` (the relaxed gate z used in training, differentiable, no straight-through),
`open_probability` (P(z > 0) per gate; its sum is E[L0]) and `deterministic_gate` (ẑ).
The deployed mask is always `binary_mask = ẑ > τ`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from slt_deploy.registry import Registry


@dataclass(frozen=True)
class GateConfig:
    """The gate family and its constants; `init` is μ₀ (stg) or log α₀ (hard-concrete)."""

    family: str = "stg"
    sigma: float = 0.5
    init: float | None = None
    threshold: float = 0.5
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

    def __init__(self, shape: tuple[int, ...], config: GateConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def parameter(self) -> nn.Parameter:
        return getattr(self, self.param_name)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def open_probability(self) -> torch.Tensor:
        raise NotImplementedError

    def deterministic_gate(self) -> torch.Tensor:
        raise NotImplementedError

    def binary_mask(self) -> torch.Tensor:
        return self.deterministic_gate() > self.config.threshold


GATES: Registry[type[GateFamily]] = Registry("gate family")


@GATES.register("stg")
class StochasticGate(GateFamily):
    """Gaussian stochastic gates (Yamada et al. 2020): z = clip(μ + ε, 0, 1), ε ~ N(0, σ²)."""

    param_name = "gate_mean"
    default_init = 0.5

    def __init__(self, shape: tuple[int, ...], config: GateConfig) -> None:
        super().__init__(shape, config)
        mu0 = self.default_init if config.init is None else config.init
        self.gate_mean = nn.Parameter(torch.full(shape, float(mu0)))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        mu = self.gate_mean
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return (mu + self.config.sigma * noise).clamp(0.0, 1.0)  # z = clip(μ + ε, 0, 1)

    def open_probability(self) -> torch.Tensor:
        # P(z > 0) = Φ(μ/σ); the penalty is λ Σ Φ(μ/σ).
        return torch.special.ndtr(self.gate_mean / self.config.sigma)

    def deterministic_gate(self) -> torch.Tensor:
        return self.gate_mean.clamp(0.0, 1.0)  # ẑ = clip(μ, 0, 1)


@GATES.register("hard-concrete")
class HardConcreteGate(GateFamily):
    """Hard-concrete gates (Louizos et al. 2018), stretched to (γ, ζ) and clipped to [0, 1]."""

    param_name = "log_alpha"
    default_init = 2.0  # sigmoid(2)·1.2 − 0.1 ≈ 0.96: gates start open, as stg's μ₀ = 0.5 does

    def __init__(self, shape: tuple[int, ...], config: GateConfig) -> None:
        super().__init__(shape, config)
        init = self.default_init if config.init is None else config.init
        self.log_alpha = nn.Parameter(torch.full(shape, float(init)))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        la = self.log_alpha
        u = torch.rand(la.shape, generator=generator, device=la.device, dtype=la.dtype)
        u = u.clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / c.beta)
        return (s * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)  # z = clip(s(ζ−γ)+γ, 0, 1)

    def open_probability(self) -> torch.Tensor:
        c = self.config
        return torch.sigmoid(self.log_alpha - c.beta * math.log(-c.gamma / c.zeta))

    def deterministic_gate(self) -> torch.Tensor:
        c = self.config
        return (torch.sigmoid(self.log_alpha) * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)
