"""The mask keeps exactly the weights the target asks for (search/budget.py): all along the
run (--budget shift) or at the end (--exact-target)."""

import json

import pytest
import torch

from slt_deploy.data import DataSpec
from slt_deploy.search.budget import meet_target_, shift_to_density_, unstructured_gates
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import resolve
from slt_deploy.search.loop import search
from slt_deploy.search.trainer import build_trainer

SPEC = DataSpec("digits", (1, 8, 8), 10, (0.0,), (1.0,))


def _model(gate: str, centre: float) -> torch.nn.Module:
    config = SearchConfig(data="digits", gate=gate, target_sparsity=0.8)
    model = build_trainer(resolve(config, 10), SPEC, 10, torch.device("cpu")).model
    generator = torch.Generator().manual_seed(0)
    for g in unstructured_gates(model):  # spread around the threshold, exact ties mixed in
        values = centre + torch.randn(g.parameter.shape, generator=generator)
        values[..., ::7] = centre - 0.25
        g.parameter.data.copy_(values)
    return model


def _open(model) -> torch.Tensor:
    return torch.cat([g.binary_mask().reshape(-1) for g in unstructured_gates(model)])


def _margins(model) -> torch.Tensor:
    gates = unstructured_gates(model)
    return torch.cat([(g.parameter - g.parameter_at_threshold()).reshape(-1) for g in gates])


@pytest.mark.parametrize("gate,centre", [("stg", 0.5), ("hard-concrete", 0.0)])
@pytest.mark.parametrize("target", [0.3, 0.8, 0.97])
def test_exactly_the_target_count_stays_open_and_the_nearest_gates_moved(gate, centre, target):
    model = _model(gate, centre)
    before_open, before = _open(model), _margins(model).detach().clone()
    want = round((1 - target) * before.numel())
    moved = meet_target_(model, target)
    after_open = _open(model)
    assert int(after_open.sum()) == want
    assert moved == want - int(before_open.sum()) != 0
    changed = after_open != before_open
    assert int(changed.sum()) == abs(moved)  # the fewest moves
    if moved > 0:  # every opened gate ranked at or above every gate left closed
        assert before[changed].min() >= before[~after_open].max()
    else:  # every closed gate ranked at or below every gate left open
        assert before[changed].max() <= before[after_open].min()
    assert meet_target_(model, target) == 0  # nothing left to move


def test_the_same_gates_move_every_time_even_with_ties():
    a, b = _model("stg", 0.5), _model("stg", 0.5)
    meet_target_(a, 0.9)
    meet_target_(b, 0.9)
    pairs = zip(unstructured_gates(a), unstructured_gates(b), strict=True)
    assert all(torch.equal(x.parameter, y.parameter) for x, y in pairs)


@pytest.mark.parametrize("density", [0.7, 0.2, 0.01])
def test_the_shift_keeps_the_scheduled_count_by_one_offset_for_every_gate(density):
    model = _model("stg", 0.5)
    before = _margins(model).detach().clone()
    shift_to_density_(model, density)
    after = _margins(model)
    assert int(_open(model).sum()) == round(density * before.numel())
    offset = after - before  # one offset: the order of the means, the thing learned, is kept
    assert torch.allclose(offset, offset[0].expand_as(offset), atol=1e-6)


def _gate_run(tmp_path, name: str, **fields) -> tuple[dict, list[dict]]:
    config = SearchConfig(data="digits", epochs=3, target_sparsity=0.9, **fields)
    summary = search(config, tmp_path / name, progress=False)
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
    return summary, records


def test_default_gates_hold_the_target_by_the_shift_and_end_on_the_exact_count(tmp_path):
    """The default sharpened gates use no penalty (λ stays 0) and keep exactly the scheduled
    count: the final mask has round((1 − s) · n) weights, as edge-popup's does; the penalty
    (--budget penalty) lands near it, steered by λ."""
    summary, records = _gate_run(tmp_path, "shift")
    assert summary["params_kept"] == round(0.1 * summary["params_total"])
    assert all(record["lambda"] == 0.0 for record in records)
    penalty, records = _gate_run(tmp_path, "penalty", budget="penalty")
    assert penalty["params_kept"] != summary["params_kept"]
    assert any(record["lambda"] != 0.0 for record in records)


def test_the_budget_default_follows_the_gates_and_presets_keep_the_penalty():
    from slt_deploy.search.presets import PRESETS

    def budget(**fields) -> str:
        return resolve(SearchConfig(data="cifar10", model="conv4", **fields), 100).budget

    assert budget(target_sparsity=0.9) == "shift"
    assert budget(l0=0.1) == "penalty"  # no target to hold
    assert budget(target_sparsity=0.9, granularity="channel") == "penalty"
    assert budget(target_sparsity=0.9, gate="hard-concrete") == "penalty"
    assert budget(target_sparsity=0.9, temperature_final=1.0) == "penalty"  # unsharpened
    assert budget(target_sparsity=0.9, cost="flops") == "penalty"  # counts multiply-adds
    for name in ("paper", "gates-v1"):
        assert budget(target_sparsity=0.9, **PRESETS.get(name)) == "penalty"


def test_the_boundary_found_near_tau_is_the_one_a_full_sort_gives():
    """The shift looks for the boundary among the means near τ first (fast), layer by layer,
    falling back to all of them; both must give the sorted keep-th and (keep + 1)-th values,
    in every regime: boundary in the band, outside it, and keep above or below n/2."""
    from slt_deploy.search.budget import _boundary, _partition_pair, _topk_pair

    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(10, 3000, (1,), generator=generator))
        spread = 2.0 * float(torch.rand(1, generator=generator))
        means = 0.5 + spread * torch.randn(n, generator=generator)
        if trial % 3 == 0:
            means[::5] = 0.5  # ties at τ
        keep = int(torch.randint(1, n, (1,), generator=generator))
        split = [n // 3, n - n // 3 - n // 7, n // 7]  # three layers, as a model has
        ordered = torch.sort(means, descending=True).values
        kept_last, closed_first = _boundary(list(means.split(split)), keep, 0.5)
        expected = (float(ordered[keep - 1]), float(ordered[keep]))
        assert (float(kept_last), float(closed_first)) == expected
        # the CPU's selection (a partition) and the GPU's (a top-k) on all the means
        for pair in (_partition_pair, _topk_pair):
            found = pair(means, keep)
            assert (float(found[0]), float(found[1])) == expected
