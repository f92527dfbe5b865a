"""Dead paths: kept weights that reach no output leave the mask, and no output changes."""

import pytest
import torch
from torch import nn

from slt_deploy.export import load_deployable
from slt_deploy.masking.fold import fold
from slt_deploy.masking.layers import masked_layers
from slt_deploy.masking.paths import remove_dead_paths
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search
from slt_deploy.search.ticket import build_model, load_ticket


def _mlp(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(4, 3, bias=bias), nn.ReLU(), nn.Linear(3, 2, bias=bias)
    ).eval()


def _masks() -> dict[str, torch.Tensor]:
    first = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    # unit 0 is read by nobody; unit 1 has no input; unit 2 is reached and read
    second = torch.tensor([[0, 1, 1], [0, 1, 0]], dtype=torch.bool)
    return {"1": first, "3": second}


def test_unread_and_silent_units_lose_their_weights():
    new, removed = remove_dead_paths(_mlp(bias=False), _masks(), (4,))
    assert removed == {"1": 2, "3": 2}  # unit 0's two inputs; both weights reading unit 1
    assert new["1"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]]
    assert new["3"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert _masks()["1"].sum() == 4  # the caller's masks are left alone


def test_a_unit_with_a_bias_is_not_silent():
    """ReLU(b) is not zero: the weights that read a bias-only unit stay."""
    model = _mlp(bias=True)
    with torch.no_grad():
        model[1].bias.fill_(0.5)
    new, removed = remove_dead_paths(model, _masks(), (4,))
    assert removed == {"1": 2}
    assert new["3"].tolist() == _masks()["3"].tolist()


def test_removal_runs_to_a_fixed_point():
    """A unit whose only reader is removed becomes unread in turn."""
    model = nn.Sequential(
        nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False), nn.ReLU(),
        nn.Linear(2, 1, bias=False),
    ).eval()  # fmt: skip
    masks = {
        "0": torch.ones(2, 2, dtype=torch.bool),
        "2": torch.tensor([[1, 1], [1, 0]], dtype=torch.bool),
        "4": torch.tensor([[1, 0]], dtype=torch.bool),  # hidden unit 1 of layer 2 is unread
    }
    new, removed = remove_dead_paths(model, masks, (2,))
    assert removed == {"2": 1}  # its one input; unit 0 still reads both first-layer units
    masks["2"] = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)  # now unit 1 of layer 1 ...
    new, removed = remove_dead_paths(model, masks, (2,))  # ... is read only by the unread unit
    assert removed == {"2": 2, "0": 2}
    assert new["0"].tolist() == [[1, 1], [0, 0]]


@pytest.mark.parametrize(
    "config",
    [
        SearchConfig(data="digits", epochs=3, target_sparsity=0.97, seed=0),
        SearchConfig(data="digits", epochs=3, method="edge-popup", target_sparsity=0.97, seed=0),
        SearchConfig(model="conv2", data="digits", epochs=1, target_sparsity=0.95, seed=0),
    ],
    ids=["lenet-gates", "lenet-edge-popup", "conv2-gates"],
)
def test_a_real_ticket_computes_the_same_outputs_with_fewer_weights(config, tmp_path):
    summary = search(config, tmp_path, progress=False)
    net = load_deployable(tmp_path)
    removed = net.source["dead_path_weights_removed"]
    assert sum(removed.values()) > 0  # these sparse tickets have dead paths
    # the search's summary already says what export ships (the report's deployed-cost axes)
    assert (
        summary["params_live"] == net.totals()[1] == summary["params_kept"] - sum(removed.values())
    )
    assert summary["macs_live"] < summary["macs_kept"]
    model = build_model(load_ticket(tmp_path))
    searched = {name: layer.mask_source.binary_mask() for name, layer in masked_layers(model)}
    for name, mask in net.masks.items():
        assert int(searched[name].sum()) - int(mask.sum()) == removed.get(name, 0)
        assert not bool((mask & ~searched[name]).any())  # only ever removes
    images = torch.randn(64, *net.data.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net.model(images), fold(model, searched)(images))


def test_an_unstructured_onnx_drops_empty_units_but_keeps_its_inputs_and_2_4_keeps_shapes(
    tmp_path,
):
    """Units left empty by dead paths leave the dense ONNX; the input features stay whole (no
    Gather: it cost more than it saved, bench/results/dead_paths/lenet_gather.txt), and a 2:4
    export keeps every shape, since its groups of 4 run along the inputs."""
    import onnx

    from slt_deploy.export import ExportRequest, export

    config = SearchConfig(data="digits", epochs=3, method="edge-popup", target_sparsity=0.97)
    search(config, tmp_path / "run", progress=False)
    report = export(ExportRequest(tmp_path / "run", "onnx", tmp_path / "m.onnx"))
    assert report["shrunk"]["applied"] and report["shrunk"]["macs_ratio"] < 1.0
    assert not any(k.endswith("inputs") for k in report["shrunk"]["channels_kept"])
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert "Gather" not in {node.op_type for node in graph.node}
    shapes = sorted(tuple(i.dims) for i in graph.initializer)  # MatMul weights: (in, out)
    first = next(shape for shape in shapes if shape[0] == 64)  # reads all 8x8 pixels
    assert first[1] < 300  # fewer first-layer units than LeNet's 300
    two_four = export(ExportRequest(tmp_path / "run", "2:4", tmp_path / "s.onnx"))
    assert not (two_four.get("shrunk") or {}).get("applied")
    assert two_four["pattern_24_layers"] == ["fc1", "fc2", "fc3"]


def test_a_2_4_target_keeps_every_shape_whatever_the_format(tmp_path):
    """Whether the runtime network is shrunk follows the request: a profile that asks for 2:4
    gets full shapes in any format, since its groups of 4 run along the inputs."""
    import onnx
    from onnx import numpy_helper

    from slt_deploy.export import ExportRequest, export
    from slt_deploy.export.targets import load_target
    from slt_deploy.masking.structure import is_24

    config = SearchConfig(data="digits", epochs=3, method="edge-popup", target_sparsity=0.97)
    search(config, tmp_path / "run", progress=False)
    profile = tmp_path / "onnx-24.toml"
    profile.write_text('description = "ONNX, 2:4"\nformat = "onnx"\nprecision = "fp32"\n'
                       'sparsity = "2:4"\n')  # fmt: skip
    request = ExportRequest(
        tmp_path / "run", "onnx", tmp_path / "m.onnx", target=load_target(profile)
    )
    assert request.shrink and not request.shrinks
    report = export(request)
    assert not (report.get("shrunk") or {}).get("applied")
    weights = [
        numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer
    ]
    assert sorted(w.shape for w in weights) == [(64, 300), (100, 10), (300, 100)]  # (in, out)
    assert all(is_24(torch.from_numpy(w.T.copy()) != 0) for w in weights if w.shape[0] % 4 == 0)
