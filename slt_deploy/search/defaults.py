"""The defaults a search resolves to, and the measurements that chose them.

`resolve(config, total_steps)` makes every default explicit before a run, so the recorded config
replays it even after the tool's defaults change. The per-method table and the gate families'
own rates live here, below the methods that use them (docs/search.md, "Defaults").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from slt_deploy.masking.gates import GATES
from slt_deploy.search.config import COMPILE_MIN_STEPS, SearchConfig


@dataclass(frozen=True)
class Defaults:
    init: str
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    scale_fan: bool = False


# Each default is the best of bench/search_quality.py's grids (docs/search.md, "Defaults").
METHOD_DEFAULTS = {
    # unstructured stg gates have measured defaults of their own: sharpened_defaults()
    "gates": Defaults("uniform", "adam", 0.01, 0.0, 0.0),
    "edge-popup": Defaults("signed-constant", "sgd", 0.1, 0.9, 1e-4, scale_fan=False),
    # Adam, not SGD 0.05: equal on LeNet (98.40% vs 98.34%), and SGD 0.05 diverged on Conv-4/6
    # CIFAR-10 (loss 15, then every ReLU dead at chance; docs/search.md, "Defaults")
    "dense": Defaults("kaiming-normal", "adam", 0.001, 0.0, 0.0),
}


def resolve(config: SearchConfig, total_steps: int) -> SearchConfig:
    """Every default made explicit, so the recorded config (run directory, ticket) replays
    the run even after the tool's defaults change (a ticket that said `init: null` would
    regenerate other weights under a new default). Compiling the gate kernels costs
    ~10-15 s once, so by default it is on only for long runs."""
    d = METHOD_DEFAULTS[config.method]
    pick = lambda value, default: default if value is None else value  # noqa: E731
    temperature = config.loss_temperature
    if temperature == "auto":
        temperature = "none" if config.method == "dense" else "learned"
    return replace(
        config,
        init=pick(config.init, default_init(config)),
        optimizer=pick(config.optimizer, d.optimizer),
        lr=pick(config.lr, default_lr(config)),
        sigma=pick(config.sigma, default_sigma(config)),
        sigma_final=pick(config.sigma_final, default_sigma_final(config)),
        sigma_start=pick(config.sigma_start, default_sigma_start(config)),
        sharpen_start=pick(config.sharpen_start, default_sharpen_start(config)),
        windup_reset=pick(config.windup_reset, sharpening(config)),
        gate_bound=pick(config.gate_bound, default_gate_bound(config)),
        budget=pick(config.budget, default_budget(config)),
        momentum=pick(config.momentum, d.momentum),
        weight_decay=pick(config.weight_decay, d.weight_decay),
        scale_fan=pick(config.scale_fan, d.scale_fan),
        loss_temperature=temperature,
        temperature_final=pick(config.temperature_final, default_temperature_final(config)),
        compile=pick(config.compile, total_steps >= COMPILE_MIN_STEPS),
        init_gain=pick(config.init_gain, 2.0**0.5),
    )


def sharpened_defaults(config: SearchConfig) -> bool:
    """Unstructured stg gates default to signed-constant weights, sharpening (t → 0.05 from
    0.35 of training), σ 0.25 annealed to 0.1 over the same span, means bounded to τ ± 3σ,
    Adam 0.03 and, with a target, the budget held by a shift (the controller's windup reset
    under --budget penalty), chosen on validation on LeNet/MNIST, Fashion-MNIST and the
    Conv-4/CIFAR-10 proxy (docs/search.md, "Dead gates", "Windup", "The budget held by a
    shift").
    Channel, 2:4 and hard-concrete gates were not measured so and keep uniform weights, their
    family's rate and t = 1: with signed-constant weights a 2:4 digits search missed its
    target by 4.5 points."""
    return (
        config.method == "gates" and config.gate == "stg" and config.granularity == "unstructured"
    )


def default_sigma(config: SearchConfig) -> float:
    """stg's noise: the family's σ, or the sharpened gates' own."""
    family = GATES.get(config.gate)
    return family.sharpened_sigma if sharpening(config) else family.default_sigma


def default_sigma_final(config: SearchConfig) -> float | None:
    """Sharpened gates anneal σ over the sharpening span; elsewhere None (σ constant)."""
    return GATES.get(config.gate).sharpened_sigma_final if sharpening(config) else None


def default_sigma_start(config: SearchConfig) -> float:
    return GATES.get(config.gate).sharpened_sigma_start if sharpening(config) else 0.0


def default_sharpen_start(config: SearchConfig) -> float:
    """Sharpened gates sharpen from where the sparsity ramp ends (0.35); 0.5 elsewhere, for a
    --temperature-final given by hand."""
    return GATES.get(config.gate).sharpened_start if sharpening(config) else 0.5


def default_gate_bound(config: SearchConfig) -> float:
    """Sharpened gates keep μ within τ ± 3σ; elsewhere 0 (unbounded, as measured before)."""
    return GATES.get(config.gate).sharpened_bound if sharpening(config) else 0.0


def default_budget(config: SearchConfig) -> str:
    """Sharpened gates with a target in weights hold it by the shift; the rest by the penalty,
    which is all an --l0 run, channel, 2:4 or hard-concrete gates have, and which weighs each
    gate by its multiply-adds under --cost flops (docs/search.md, "The budget held by a
    shift")."""
    return "shift" if sharpening(config) and config.shift_applies else "penalty"


def sharpening(config: SearchConfig) -> bool:
    """Sharpened gates that keep their default sharpening: the rate and σ chosen with it."""
    return sharpened_defaults(config) and (
        config.temperature_final is None or config.temperature_final < 1.0
    )


def default_init(config: SearchConfig) -> str:
    return "signed-constant" if sharpened_defaults(config) else METHOD_DEFAULTS[config.method].init


def default_temperature_final(config: SearchConfig) -> float | None:
    """Sharpening where it was measured; elsewhere None (t = 1, no temperature)."""
    return GATES.get(config.gate).default_temperature_final if sharpened_defaults(config) else None


def default_lr(config: SearchConfig) -> float:
    """The method's learning rate, or the gate family's own where it has one (sharpened
    unstructured stg gates: their own again)."""
    if config.method != "gates":
        return METHOD_DEFAULTS[config.method].lr
    family = GATES.get(config.gate)
    if sharpening(config):
        return family.sharpened_lr
    family_lr = family.default_lr
    return METHOD_DEFAULTS[config.method].lr if family_lr is None else family_lr
