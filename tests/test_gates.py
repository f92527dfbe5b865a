import math

import pytest
import torch
from scipy.stats import norm

from slt_deploy.masking.gates import GATES, GateConfig, HardConcreteGate, StochasticGate
from slt_deploy.search.defaults import resolve


def test_stg_formulas_match_design():
    gate = StochasticGate((5,), GateConfig(sigma=0.5))
    with torch.no_grad():
        gate.gate_mean.copy_(torch.tensor([-1.0, 0.0, 0.3, 0.7, 1.5]))
    expected = norm.cdf(gate.gate_mean.detach().numpy() / 0.5)  # Φ(μ/σ)
    assert torch.allclose(gate.open_probability(), torch.tensor(expected, dtype=torch.float32))
    assert gate.deterministic_gate().tolist() == pytest.approx([0.0, 0.0, 0.3, 0.7, 1.0])
    assert gate.binary_mask().tolist() == [False, False, False, True, True]


def test_stg_sample_is_clipped_and_differentiable_without_straight_through():
    gate = StochasticGate((20000,), GateConfig(sigma=0.5))
    torch.manual_seed(0)
    z = gate.sample()
    assert float(z.detach().min()) >= 0.0 and float(z.detach().max()) <= 1.0
    z.sum().backward()
    inside = ((z > 0) & (z < 1)).float()
    # dz/dμ is exactly 1 inside (0, 1) and 0 where clipped: a true gradient, no STE.
    assert torch.equal(gate.gate_mean.grad, inside)
    # The empirical P(z > 0) matches Φ(μ/σ) = Φ(1).
    assert abs(float((z > 0).float().mean()) - norm.cdf(1.0)) < 0.01


def test_hard_concrete_open_probability_matches_monte_carlo():
    config = GateConfig(family="hard-concrete")
    gate = HardConcreteGate((200000,), config)
    with torch.no_grad():
        gate.log_alpha.fill_(-0.5)
    torch.manual_seed(1)
    with torch.no_grad():  # values only: the gradients are test_gates' other tests
        z = gate.sample()
        analytic = float(gate.open_probability()[0])
    empirical = float((z > 0).float().mean())
    assert abs(empirical - analytic) < 0.005
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0  # stretched and clipped: exact 0 and 1
    expected = min(1.0, max(0.0, 1 / (1 + math.exp(0.5)) * 1.2 - 0.1))
    assert float(gate.deterministic_gate()[0].detach()) == pytest.approx(expected, abs=1e-6)


def test_hard_concrete_gradient_flows():
    gate = HardConcreteGate((1000,), GateConfig(family="hard-concrete"))
    gate.sample().sum().backward()
    assert float(gate.log_alpha.grad.abs().sum()) > 0


def test_registry_knows_both_families():
    assert GATES.names() == ["hard-concrete", "stg"]


def test_compiled_kernels_match_the_eager_maths():
    from slt_deploy.masking.kernels import EAGER, compiled

    generator = torch.Generator().manual_seed(0)
    grad, weight, mean = (torch.randn(1000, generator=generator) for _ in range(3))
    pre_clip = torch.rand(1000, generator=generator) * 1.6 - 0.3
    fused = compiled()
    with torch.no_grad():
        for scale in (1.0, 4.0):  # 1/t: plain and sharpened gates
            assert torch.allclose(
                fused["backward"](grad, weight, pre_clip, scale),
                EAGER["backward"](grad, weight, pre_clip, scale),
            )
        coef = torch.tensor(0.37)
        for offset in (0.0, -0.3):  # τ(t − 1)
            assert torch.allclose(
                fused["penalty"](grad, mean, coef, 0.5, offset),
                EAGER["penalty"](grad, mean, coef, 0.5, offset),
                atol=1e-6,
            )


def _assert_penalty_grad_is_autograds(gate, low: float, high: float, coefficient: float,
                                      atol: float) -> None:  # fmt: skip
    """The analytic penalty gradient (add_penalty_grad_) equals autograd's through P(open)."""
    with torch.no_grad():
        gate.parameter.uniform_(low, high)
    gate.open_probability().sum().mul(coefficient).backward()
    expected = gate.parameter.grad.clone()
    gate.parameter.grad = None
    gate.add_penalty_grad_(coefficient)
    assert torch.allclose(gate.parameter.grad, expected, atol=atol)


def test_analytic_penalty_gradient_equals_autograd():
    for family in ("stg", "hard-concrete"):
        gate = GATES.get(family)((500,), GateConfig(family=family))
        _assert_penalty_grad_is_autograds(gate, -2, 2, 0.3, atol=1e-6)


def test_each_gate_family_has_its_own_default_learning_rate():
    from slt_deploy.search.config import SearchConfig

    # hard-concrete's log α moves over several units where stg's μ moves within [0, 1]:
    # Adam 0.01 left it 3 points behind 0.03 (docs/search.md, "Defaults")
    assert resolve(SearchConfig(gate="hard-concrete"), 10).lr == 0.03
    # sharpened unstructured stg gates (the default, σ 0.25 and bounded) learn at 0.03; at
    # t = 1 and on channel or 2:4 gates, where sharpening was not measured, stg keeps 0.01
    assert resolve(SearchConfig(gate="stg"), 10).lr == 0.03
    assert resolve(SearchConfig(gate="stg", temperature_final=1.0), 10).lr == 0.01
    assert resolve(SearchConfig(gate="stg", granularity="2:4"), 10).lr == 0.01
    assert resolve(SearchConfig(gate="hard-concrete", lr=0.005), 10).lr == 0.005
    assert resolve(SearchConfig(method="edge-popup", gate="hard-concrete"), 10).lr == 0.1


def test_sharpened_stg_keeps_the_mask_and_its_open_probability_matches_monte_carlo():
    """Temperature t: z = clip(τ + (μ − τ + ε)/t, 0, 1). The binary mask μ > τ is the same
    for every t (the ticket does not depend on it), P(z > 0) = Φ((μ − τ + τt)/σ), the
    analytic penalty gradient equals autograd's, and at small t almost every sample is 0 or 1."""
    gate = StochasticGate((200000,), GateConfig(sigma=0.3))
    with torch.no_grad():
        gate.gate_mean.uniform_(-0.5, 1.5)
    mask = gate.binary_mask().clone()
    for t in (1.0, 0.5, 0.1):
        gate.temperature = t
        assert torch.equal(gate.binary_mask(), mask), t
        mean = gate.gate_mean.detach()
        expected = norm.cdf(((mean - 0.5 + 0.5 * t) / 0.3).numpy())
        assert torch.allclose(gate.open_probability(), torch.tensor(expected, dtype=torch.float32),
                              atol=1e-6)  # fmt: skip
    with torch.no_grad():
        gate.gate_mean.fill_(0.45)
    gate.temperature = 0.2
    torch.manual_seed(3)
    with torch.no_grad():
        z = gate.sample()
    analytic = norm.cdf((0.45 - 0.5 + 0.5 * 0.2) / 0.3)
    assert abs(float((z > 0).float().mean()) - analytic) < 0.005
    gate.temperature = 0.01
    with torch.no_grad():
        z = gate.sample()
    assert float(((z > 0) & (z < 1)).float().mean()) < 0.02  # the relaxation is nearly binary
    small = StochasticGate((500,), GateConfig(sigma=0.3))
    small.temperature = 0.3
    _assert_penalty_grad_is_autograds(small, -1, 2, 0.7, atol=1e-5)


def test_sharpened_masked_weight_has_the_exact_scaled_gradient():
    """∂z/∂μ = 1/t inside (0, 1), 0 where clipped: still the exact gradient, no STE."""
    gate = StochasticGate((5000,), GateConfig(sigma=0.5, compile=False))
    gate.temperature = 0.25
    weight = torch.ones(5000)
    torch.manual_seed(0)
    out = gate.masked_weight(weight)
    out.sum().backward()
    inside = ((out > 0) & (out < 1)).float()
    assert torch.allclose(gate.gate_mean.grad, inside / 0.25)
