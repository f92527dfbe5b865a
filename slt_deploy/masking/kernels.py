"""Pointwise kernels of the stg gate path, fused by torch.compile where that measured faster.

A gate step on CPU is a dozen elementwise passes over every weight; eager PyTorch runs each
as its own loop, and together they cost more than the matmuls. Measured per kernel on 235k
gates, 2 threads (bench/gate_kernels.py; bench/step_cost.py has the whole-step figures):
- backward (clip gradient: compare, compare, and, multiply, select): 0.68 ms eager, 0.13 fused;
- penalty gradient (add, square, scale, exp, scale, add): 0.37 ms eager, 0.27 fused;
- below ~16k (backward) and ~130k (penalty) gates the ~50 us a compiled call costs in guards
  and dispatch outweighs the fusion; they stay compiled all the same (`kernels`);
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
    gate_mean: torch.Tensor,
    weight: torch.Tensor,
    noise: torch.Tensor,
    sigma: float,
    temperature: float = 1.0,
    threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W ⊙ clip(z̃, 0, 1), z̃) with z̃ = τ + (μ − τ)/t + (σ/t)ε (z̃ = μ + σε at t = 1).

    In place on one fresh tensor and outside autograd: the sharpened gate as an autograd
    graph of its own (sub, mul, add and their backward) cost 15–20% of a LeNet gate step."""
    if temperature == 1.0:
        pre_clip = torch.add(gate_mean, noise, alpha=sigma)
    else:
        pre_clip = gate_mean.sub(threshold).mul_(1.0 / temperature).add_(threshold)
        pre_clip.add_(noise, alpha=sigma / temperature)
    return weight * pre_clip.clamp(0.0, 1.0), pre_clip


def stg_backward(
    grad: torch.Tensor, weight: torch.Tensor, pre_clip: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """∂L/∂μ = ∂L/∂W_eff ⊙ W / t inside (0, 1), 0 where the clip is active (exact, no STE);
    `scale` is 1/t."""
    return torch.where((pre_clip > 0.0) & (pre_clip < 1.0), grad * weight * scale, 0.0)


def stg_penalty_grad(
    grad: torch.Tensor,
    gate_mean: torch.Tensor,
    coefficient: torch.Tensor,
    sigma: float,
    offset: float = 0.0,
) -> torch.Tensor:
    """grad + coefficient · dΦ(a/σ)/dμ, with a = μ + offset (τ(t − 1) when sharpened) and
    dΦ(a/σ)/dμ = exp(−a²/2σ²) / (σ√(2π))."""
    scale = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    argument = gate_mean + offset
    return grad + coefficient * scale * torch.exp(argument * argument * (-0.5 / sigma**2))


EAGER: dict[str, Callable] = {"backward": stg_backward, "penalty": stg_penalty_grad}


@functools.cache
def compiled() -> dict[str, Callable]:
    """The kernels compiled once per process; the eager ones if compilation fails."""
    # torch logs "No CUDA runtime is found" on CPU-only machines when it compiles: not news
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        fused = {name: torch.compile(fn, dynamic=True) for name, fn in EAGER.items()}
        # the example's size is the hint inductor decides parallelism by: a tiny one (8)
        # compiled a single-threaded loop for every size (2 threads: no faster than 1)
        a, b, c = torch.zeros(1 << 20), torch.ones(1 << 20), torch.full((1 << 20,), 0.5)
        with torch.no_grad():  # as they are called: in backward and after it
            fused["backward"](a, b, c, 1.0)  # compile now: a failure shows here, not mid-run
            fused["penalty"](a, c, torch.zeros(()), 0.5, 0.0)
        return fused
    except Exception as exc:  # a missing compiler surfaces as many exception types
        warnings.warn(
            f"torch.compile unavailable ({type(exc).__name__}); gate kernels run "
            "eagerly (slower, same maths)",
            stacklevel=2,
        )
        return EAGER


def kernels(use_compiled: bool) -> dict[str, Callable]:
    """The compiled kernels, at every layer size. Below ~16k gates (backward) and ~130k
    (penalty) eager ones measured faster (bench/results/gate_kernels.txt: a compiled call costs
    ~50 us of guards and dispatch), but they round differently in the last bit, so a search
    would no longer repeat the recorded runs bit for bit; on LeNet they would save ~2% of a step."""
    return compiled() if use_compiled else EAGER
