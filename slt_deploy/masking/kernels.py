"""Pointwise kernels of the stg gate path, fused by torch.compile where that measured faster.

A gate step on CPU is a dozen elementwise passes over every weight; eager PyTorch runs each
as its own loop, and together they cost more than the matmuls. Measured per kernel on 235k
gates, 1 thread (bench/step_cost.py has the whole-step figures):
- backward (clip gradient: compare, compare, and, multiply, select): 2.1 ms eager, 0.4 fused;
- penalty gradient (square, scale, exp, scale, add): 1.0 ms eager, 0.6 fused;
- forward with a noise window: no gain from fusing (0.3 ms either way), so it stays eager;
  drawing the noise inside a compiled kernel was 6x *slower* than a noise table (inductor's
  CPU randn is scalar Philox + Box–Muller).
Autograd never goes through compile: the custom Function in gates.py calls these on
flattened (1-D) tensors, so one dynamic dimension compiles once for every layer shape.
Where compiling is impossible (no C++ compiler) the same functions run eagerly after one
warning.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable

import torch


def stg_forward(
    gate_mean: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W ⊙ clip(μ + σε, 0, 1), μ + σε)."""
    pre_clip = torch.add(gate_mean, noise, alpha=sigma)
    return weight * pre_clip.clamp(0.0, 1.0), pre_clip


def stg_backward(grad: torch.Tensor, weight: torch.Tensor, pre_clip: torch.Tensor) -> torch.Tensor:
    """∂L/∂μ = ∂L/∂W_eff ⊙ W inside (0, 1), 0 where the clip is active (exact, no STE)."""
    return torch.where((pre_clip > 0.0) & (pre_clip < 1.0), grad * weight, 0.0)


def stg_penalty_grad(
    grad: torch.Tensor, gate_mean: torch.Tensor, coefficient: torch.Tensor, sigma: float
) -> torch.Tensor:
    """grad + coefficient · dΦ(μ/σ)/dμ, with dΦ(μ/σ)/dμ = exp(−μ²/2σ²) / (σ√(2π))."""
    scale = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    return grad + coefficient * scale * torch.exp(gate_mean * gate_mean * (-0.5 / sigma**2))


EAGER: dict[str, Callable] = {"backward": stg_backward, "penalty": stg_penalty_grad}


@functools.cache
def compiled() -> dict[str, Callable]:
    """The kernels compiled once per process; the eager ones if compilation fails."""
    # torch logs "No CUDA runtime is found" on CPU-only machines when it compiles: not news
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        fused = {name: torch.compile(fn, dynamic=True) for name, fn in EAGER.items()}
        a, b, c = torch.zeros(8), torch.ones(8), torch.full((8,), 0.5)
        with torch.no_grad():  # as they are called: in backward and after it
            fused["backward"](a, b, c)  # compile now, so a failure shows here, not mid-run
            fused["penalty"](a, c, torch.zeros(()), 0.5)
        return fused
    except Exception as exc:  # a missing compiler surfaces as many exception types
        warnings.warn(
            f"torch.compile unavailable ({type(exc).__name__}); gate kernels run "
            "eagerly (slower, same maths)",
            stacklevel=2,
        )
        return EAGER


def kernels(use_compiled: bool) -> dict[str, Callable]:
    return compiled() if use_compiled else EAGER
