import pytest
import torch
from torch import nn

from slt_deploy.init import InitSpec, frozen_weight
from slt_deploy.masking.gates import GateConfig, HardConcreteGate, StochasticGate
from slt_deploy.masking.layers import MaskedConv2d, MaskedLinear
from slt_deploy.masking.sources import EdgePopupScores, GateSource
from slt_deploy.masking.surgery import gate_, normalisation_
from slt_deploy.search.trainer import to_channels_last


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=True),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )


def test_surgery_freezes_weights_and_learns_only_gates():
    init = InitSpec("uniform", 3)
    model = gate_(
        normalisation_(_net(), affine_bn=False),
        lambda name, shape: GateSource(StochasticGate(shape, GateConfig())),
        init,
    )
    assert isinstance(model[0], MaskedConv2d) and isinstance(model[4], MaskedLinear)
    assert model[0].bias is None and model[4].bias is None
    assert not model[1].affine
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["0.mask_source.gate.gate_mean", "4.mask_source.gate.gate_mean"]
    assert torch.equal(model[0].frozen_weight, frozen_weight(init, "0", (8, 3, 3, 3)))
    assert "0.frozen_weight" in model.state_dict()  # a buffer, not a parameter


def test_eval_uses_exactly_the_binary_mask():
    model = gate_(
        _net(),
        lambda name, shape: GateSource(StochasticGate(shape, GateConfig())),
        InitSpec("uniform", 0),
    )
    layer = model[4]
    with torch.no_grad():
        layer.mask_source.gate.gate_mean.uniform_(-1, 2)
    layer.eval()
    x = torch.randn(4, 8 * 6 * 6)
    mask = (layer.mask_source.gate.gate_mean > 0.5).float()
    assert torch.allclose(layer(x), x @ (layer.frozen_weight * mask).T)


def test_edge_popup_keeps_exactly_k_per_layer_and_passes_gradient_straight_through():
    scores = EdgePopupScores((100, 50), density=0.1)
    mask = scores.training_mask()
    assert int(mask.sum()) == 500
    upstream = torch.arange(5000.0).view(100, 50)
    (mask * upstream).sum().backward()
    # straight through the top-k, then through |·|: the gradient carries sign(score)
    assert torch.equal(scores.scores.grad, upstream * scores.scores.detach().sign())
    assert int(scores.binary_mask().sum()) == 500


@pytest.mark.parametrize(
    "source",
    [
        lambda name, shape: GateSource(StochasticGate(shape, GateConfig())),
        lambda name, shape: GateSource(HardConcreteGate(shape, GateConfig(family="hard-concrete"))),
        lambda name, shape: EdgePopupScores(shape, 0.5),
    ],
    ids=["stg", "hard-concrete", "edge-popup"],
)
def test_channels_last_training_keeps_gradients_laid_out_as_their_parameters(source):
    """Fused Adam needs each gradient laid out exactly as its parameter. A channels-last 1x1
    convolution counts as contiguous either way, and its gradient once came back NCHW
    (ResNet's downsample convs: the H200 bf16 + channels-last run failed in Adam)."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 10))  # fmt: skip
    model = to_channels_last(gate_(net, source, InitSpec("uniform", 0)))
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert [p.dim() for p in params] == [4, 4, 2]
    assert params[1].stride() != torch.empty(params[1].shape).stride()  # the 1x1 case is here
    for p in params:
        assert p.grad.stride() == p.stride()
    before = [p.detach().clone() for p in params]
    torch.optim.Adam(params, lr=0.01, fused=True).step()  # raised "... same layout" before
    assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
