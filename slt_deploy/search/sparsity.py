"""Sparsity control under `--budget penalty`: λ fixed by `--l0`, or steered toward
`--target-sparsity`. The default sharpened gates use `--budget shift` instead (budget.py): the
scheduled count held exactly, no λ; only `target_at`, the ramp, is shared with it.

The penalty is λ · E[L0] / N (docs/design.md: λ Σ P(open), divided by the number of gates N so that
one λ means the same on every model).

With a target s the constraint is an equality (the user asks for a sparsity), solved by a PI
controller on the Lagrange multiplier. Each part was measured to be necessary:
- The target density ramps from the initial density down to 1 − s over the first `ramp`
  fraction of training (cubic, as in gradual magnitude pruning). Closed gates get almost no
  gradient, so overshooting early is permanent. 0.35 landed short runs within a point where
  0.5 missed (docs/search.md).
- During the ramp it steers the mean deterministic gate mean(ẑ), which moves with every μ in
  (0, 1). The binary density does not: with μ₀ = τ it reads ≈ 0.5 whatever the gates do, a dead
  zone in which an integrator winds up unseen and then closes everything at once. E[L0]/N was
  tried too: it sits above the binary density, so tracking it overshot the target. Across the
  ramp's second half the controller hands over (linearly) to the *binary* density actually
  deployed, which it steers afterwards.
- λ is signed: the cross-entropy alone closes gates (random weights add noise), so holding a
  density can need a reward for open gates.
- λ = scale · (K_p · e + Σ K_i · e), e = clip((density − target) / target, −1, 1), where
  `scale` = ‖∇CE‖ / ‖∇penalty‖ over the gate parameters at the first step: the λ at which the
  two forces balance, so no per-model tuning. Pure integral control (tried first) lagged
  ~800 steps behind and then overshot.
- `windup_reset` (the default for sharpened gates): the integral built while the density lagged
  the moving target is dropped once, at the first crossing of the final target after the ramp.
  Without it, MNIST at 99% overshot to 99.18% and 99.32% on two seeds of three: on seed 0 λ
  stayed near +1,100 for two epochs past the crossing and the sharpened gates froze at 99.36%;
  the negative λ that followed (down to −1,000) reopened gates by the penalty's push, not the
  loss's, and validation accuracy fell from 94.5% to 88.4% (96.1% with the reset;
  docs/search.md, "Windup").
- Updates come every `control_interval(total_steps)` steps (mask statistics are a pass over
  every gate): every step in short runs, every 10th in long ones.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTROL_EVERY = 10


def control_interval(total_steps: int) -> int:
    """Every step for short runs (they need every update), up to CONTROL_EVERY for long ones."""
    return max(1, min(CONTROL_EVERY, total_steps // 1000))


@dataclass
class SparsityController:
    final_density: float | None
    lam: float
    k_i: float = 0.01
    k_p: float = 1.0
    ramp: float = 0.35
    scale: float | None = None
    integral: float = 0.0
    target_density: float | None = None
    start_density: float | None = None
    windup_reset: bool = False
    settled: bool = False  # the integral was reset (once) after the ramp

    @classmethod
    def create(
        cls,
        target_sparsity: float | None,
        l0: float | None,
        k_i: float,
        ramp: float = 0.35,
        windup_reset: bool = False,
    ) -> SparsityController:
        if target_sparsity is None:
            return cls(None, 0.0 if l0 is None else float(l0), k_i, ramp=ramp)
        return cls(1.0 - target_sparsity, 0.0, k_i, ramp=ramp, windup_reset=windup_reset)

    @property
    def needs_scale(self) -> bool:
        return self.final_density is not None and self.scale is None

    def target_at(self, progress: float) -> float:
        """Target density at training progress `progress` ∈ [0, 1]."""
        assert self.final_density is not None
        start = self.final_density if self.start_density is None else self.start_density
        remaining = max(0.0, 1.0 - progress / self.ramp) if self.ramp > 0 else 0.0
        return self.final_density + max(0.0, start - self.final_density) * remaining**3

    def update(
        self, binary_density: float, soft_density: float, progress: float, steps: int = 1
    ) -> None:
        """One control update covering `steps` optimizer steps (the integral scales with it)."""
        if self.final_density is None:
            return
        if self.start_density is None:
            self.start_density = soft_density
        self.target_density = self.target_at(progress)
        # Hand over from the soft to the binary density across the ramp's second half.
        weight = min(1.0, max(0.0, 2.0 * progress / self.ramp - 1.0)) if self.ramp > 0 else 1.0
        density = (1.0 - weight) * soft_density + weight * binary_density
        error = max(-1.0, min(1.0, (density - self.target_density) / self.target_density))
        crossed = error * self.integral < 0  # the density is past the target the integral chased
        if self.windup_reset and not self.settled and progress >= self.ramp and crossed:
            self.integral, self.settled = 0.0, True
        self.integral += self.k_i * steps * error
        self.lam = (self.scale or 1.0) * (self.k_p * error + self.integral)

    def state_dict(self) -> dict:
        return {
            "lam": self.lam,
            "scale": self.scale,
            "integral": self.integral,
            "start_density": self.start_density,
            "settled": self.settled,
        }

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state["lam"])
        self.scale = state["scale"]
        self.integral = float(state["integral"])
        self.start_density = state["start_density"]
        self.settled = bool(state.get("settled", False))
