"""Structured tickets: channel plans, channel gates, and the physically shrunk export."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from slt_deploy.data.base import DataSpec
from slt_deploy.evaluate import evaluate_artifact
from slt_deploy.export import ExportRequest, export
from slt_deploy.export.network import from_ticket
from slt_deploy.masking.channels import channel_plan
from slt_deploy.masking.shrink import measure, shrink
from slt_deploy.models import ModelSpec, create_model
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search
from slt_deploy.search.stats import (
    add_penalty_grad_,
    channel_density,
    channel_sources,
    structured_sparsity,
)
from slt_deploy.search.ticket import build_model, load_ticket

DIGITS = (1, 8, 8)


def _plan(name: str, shape: tuple[int, ...], **kwargs):
    spec = DataSpec("test", shape, 10, (0.5,) * shape[0], (0.5,) * shape[0])
    return channel_plan(create_model(ModelSpec(name, kwargs), spec), shape)


def test_plan_of_sequential_networks_follows_flatten_into_the_classifier():
    lenet = _plan("lenet-300-100", DIGITS)
    assert {p: g.consumers for p, g in lenet.groups.items()} == {
        "fc1": (("fc2", 1),),
        "fc2": (("fc3", 1),),
    }
    assert lenet.outputs == {"fc3"}
    assert lenet.inputs == {"fc1"}  # reads the flattened pixels: they get gates too
    conv = _plan("conv2", DIGITS)
    assert conv.inputs == frozenset()
    assert conv.groups["conv1"].gate_after == "bn1"  # after BN: BN would undo a weight gate
    assert conv.groups["conv1"].consumers == (("conv2", 1),)
    # conv2 → bn → relu → 2x2 pool (8x8 → 4x4) → flatten: each channel is 16 features
    assert conv.groups["conv2"].consumers == (("fc1", 16),)
    assert conv.outputs == {"fc3"}


def test_plan_leaves_residual_joins_and_attention_ungated():
    resnet = _plan("resnet18", (3, 32, 32))
    assert sorted(resnet.groups) == sorted(
        f"layer{i}.{j}.conv1" for i in range(1, 5) for j in range(2)
    )
    assert all(g.norm and g.norm.endswith("bn1") for g in resnet.groups.values())
    vit = _plan("vit_tiny", (3, 32, 32))
    mlp = {f"blocks.{i}.mlp.fc1" for i in range(12)}
    heads = {f"blocks.{i}.attn.qkv" for i in range(12)}
    assert set(vit.groups) == mlp | heads  # MLP hidden units and attention heads
    for name in mlp:
        assert vit.groups[name].consumers == ((name.replace("fc1", "fc2"), 1),)
    for name in heads:
        group = vit.groups[name]
        assert (group.channels, group.head_dim) == (3, 64)
        assert group.consumers == ((name.replace("qkv", "proj"), 64),)


def test_unread_input_pixels_are_gathered_away_exactly():
    spec = DataSpec("test", DIGITS, 10, (0.5,), (0.5,))
    lenet = create_model(ModelSpec("lenet-300-100", {}), spec).eval()
    with torch.no_grad():
        lenet.fc1.weight[:, :10] = 0  # the first ten pixels are read by no neuron
        lenet.fc1.weight[5] = 0  # and one neuron reads nothing
    small, kept = shrink(lenet, DIGITS, multiple=1)
    assert kept == {"fc1 inputs": 54, "fc1": 299}
    assert small.fc1[1].weight.shape == (299, 54)
    x = torch.randn(16, *DIGITS)
    with torch.no_grad():
        assert torch.allclose(small(x), lenet(x), atol=1e-5)


def test_shrinking_attention_heads_and_mlp_units_is_exact():
    import timm

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1,
        num_heads=4, num_classes=10, pretrained=False,
    ).eval()  # fmt: skip
    attn, mlp = vit.blocks[0].attn, vit.blocks[0].mlp
    with torch.no_grad():
        qkv = attn.qkv.weight.view(3, 4, 8, 32)
        qkv[:, [1, 3]] = 0  # heads 1 and 3 closed: their q, k and v rows
        attn.qkv.bias.view(3, 4, 8)[:, [1, 3]] = 0
        mlp.fc1.weight[::2] = 0  # every other hidden unit closed (GELU(0) = 0)
        mlp.fc1.bias[::2] = 0
    small, kept = shrink(vit, (3, 16, 16))
    assert kept == {"blocks.0.attn.qkv": 2, "blocks.0.mlp.fc1": 64}
    assert small.blocks[0].attn.num_heads == 2
    assert small.blocks[0].attn.qkv.out_features == 3 * 2 * 8
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(small(x), vit(x), atol=1e-5)


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("channel") / "lenet"
    config = SearchConfig(
        model="lenet-300-100", granularity="channel", target_sparsity=0.6, epochs=6, seed=1
    )
    return out, search(config, out, progress=False)


def test_channel_masks_remove_whole_rows_and_their_input_columns(lenet_run):
    out, summary = lenet_run
    model = build_model(load_ticket(out))
    fc1, fc2 = model.get_submodule("fc1"), model.get_submodule("fc2")
    rows1 = fc1.mask_source.row_mask()
    mask2 = fc2.mask_source.binary_mask()
    assert 0 < int(rows1.sum()) < 300
    assert not mask2[:, ~rows1].any()  # a closed fc1 neuron takes its fc2 column with it
    assert not mask2[~fc2.mask_source.row_mask()].any()
    pixels = fc1.mask_source.input_gate.binary_mask()  # closed pixels take fc1's columns
    assert not fc1.mask_source.binary_mask()[:, ~pixels].any()
    # the controller's count formula (rows · Q · columns) agrees with the masks themselves
    masks = [layer.mask_source.binary_mask() for layer in (fc1, fc2, model.fc3)]
    kept = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert float(channel_density(channel_sources(model), "binary")) == pytest.approx(kept)
    assert summary["sparsity"] == pytest.approx(1 - kept)
    assert abs(summary["sparsity"] - 0.6) < 0.05
    assert summary["shrunk_test_accuracy"] == summary["test_accuracy"]


def test_shrunk_onnx_is_smaller_and_predicts_what_the_search_reported(lenet_run, tmp_path):
    out, summary = lenet_run
    small = export(ExportRequest(out, "onnx", tmp_path / "small.onnx"))
    full = export(ExportRequest(out, "onnx", tmp_path / "full.onnx", shrink=False))
    assert small["shrunk"]["after"]["params"] == summary["params_shrunk_network"]
    assert small["shrunk"]["params_ratio"] < 0.6
    assert small["bytes"] < 0.6 * full["bytes"]
    assert small["parity"]["same_predictions"] == 1.0
    result = evaluate_artifact(tmp_path / "small.onnx", "digits")
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"])
    # seed + bit masks rebuild the same shrunk network, byte for byte
    export(ExportRequest(out, "slt", tmp_path / "t.slt"))
    export(ExportRequest(tmp_path / "t.slt", "onnx", tmp_path / "again.onnx"))
    assert (tmp_path / "again.onnx").read_bytes() == (tmp_path / "small.onnx").read_bytes()


def test_conv_channels_after_batchnorm_shrink_exactly(tmp_path):
    config = SearchConfig(
        model="conv2", granularity="channel", target_sparsity=0.5, epochs=3, seed=0
    )
    summary = search(config, tmp_path / "run", progress=False)
    net = from_ticket(load_ticket(tmp_path / "run"))
    x = torch.randn(64, *DIGITS)
    minimal, kept_minimal = shrink(net.model, DIGITS, multiple=1)
    small, kept = shrink(net.model, DIGITS)  # counts rounded up to 8 with closed channels
    assert kept["conv1"] < 64 and kept["conv2"] < 64
    assert all(n % 8 == 0 for n in kept.values())
    assert all(kept_minimal[k] <= n < kept_minimal[k] + 8 for k, n in kept.items())
    with torch.no_grad():
        assert torch.allclose(small(x), net.model(x), atol=1e-5)
        assert torch.allclose(minimal(x), net.model(x), atol=1e-5)
    assert measure(small, DIGITS).macs < measure(net.model, DIGITS).macs
    assert summary["shrunk_macs_ratio"] < 1.0


def test_flops_cost_weighs_each_layer_by_its_output_positions(tmp_path):
    config = SearchConfig(
        model="conv2", granularity="channel", cost="flops", l0=0.0, max_steps=1, epochs=1
    )
    search(config, tmp_path / "run", progress=False)
    model = build_model(load_ticket(tmp_path / "run"))
    weights = {n: s.cost_weight for n, s in model.named_modules() if hasattr(s, "cost_weight")}
    assert weights["conv1.mask_source"] == 64  # 8x8 outputs
    assert weights["fc1.mask_source"] == 1


def test_channel_plus_unstructured_gates_every_weight_too(tmp_path):
    config = SearchConfig(
        model="lenet-300-100", granularity="channel+unstructured", target_sparsity=0.7, epochs=2
    )
    summary = search(config, tmp_path / "run", progress=False)
    model = build_model(load_ticket(tmp_path / "run"))
    assert model.fc1.mask_source.weight_gate is not None
    mask = model.fc1.mask_source.binary_mask()
    rows = model.fc1.mask_source.row_mask()
    assert (mask[rows].float().mean() < 1.0).item()  # weights closed inside open neurons
    assert summary["shrunk_test_accuracy"] == summary["test_accuracy"]


def test_structure_scope_penalises_channels_only_and_steers_the_removed_fraction(tmp_path):
    """--target-scope structure: the target is what shrinking removes, the per-weight gates
    carry no penalty (their zeros come on top), and the shrunk network is that much smaller."""
    config = SearchConfig(
        model="lenet-300-100",
        granularity="channel+unstructured",
        target_scope="structure",
        target_sparsity=0.7,
        epochs=3,
    )
    summary = search(config, tmp_path / "run", progress=False)
    assert abs(summary["structured_sparsity"] - 0.7) < 0.03, summary["structured_sparsity"]
    assert summary["sparsity"] > summary["structured_sparsity"] + 0.02  # per-weight zeros on top
    assert abs(summary["shrunk_params_ratio"] - (1 - summary["structured_sparsity"])) < 0.03
    assert summary["shrunk_test_accuracy"] == summary["test_accuracy"]
    assert summary["target_scope"] == "structure"

    model = build_model(load_ticket(tmp_path / "run"))
    sources = channel_sources(model)
    assert all(s.structure_only for s in sources)  # the ticket's config rebuilds the scope
    assert structured_sparsity(model) == pytest.approx(summary["structured_sparsity"])
    for param in model.parameters():
        param.grad = None
    add_penalty_grad_(model, 1.0)
    fc1 = model.fc1.mask_source
    assert fc1.weight_gate.parameter.grad is None  # no penalty on per-weight gates
    assert fc1.gate.parameter.grad.abs().sum() > 0 and fc1.input_gate.parameter.grad.abs().sum() > 0
    every_zero = channel_density(sources, "binary", structure_only=False)
    assert float(every_zero) == pytest.approx(1 - summary["sparsity"], abs=1e-6)


EDGE_POPUP_FLOPS = [
    "--granularity",
    "unstructured",
    "--method",
    "edge-popup",
    "--target-sparsity",
    "0.5",
    "--cost",
    "flops",
]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "edge-popup", "--target-sparsity", "0.5"], "is a gates search"),
        (["--granularity", "2:4", "--cost", "flops"], "--cost flops"),
        (EDGE_POPUP_FLOPS, "--cost flops"),
        (["--granularity", "unstructured", "--target-scope", "structure"], "--target-scope"),
    ],
)
def test_bad_channel_settings_are_one_line(tmp_path, args, message):
    extra = ["--granularity", "channel"] if "--granularity" not in args else []
    done = run_cli("search", *extra, *args, "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_channel_ticket_refuses_unstructured_mask_options(lenet_run, tmp_path):
    out, _ = lenet_run
    for args in (["--format", "onnx", "--threshold", "0.3"], ["--format", "2:4"]):
        done = run_cli("export", str(out), *args, "--out", str(tmp_path / "x.onnx"))
        assert done.returncode == 2, done.stderr
        assert "channel ticket" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("export", str(out), "--format", "onnx", "--out", str(tmp_path / "y.onnx"))
    assert done.returncode == 0, done.stderr
    assert "shrunk:" in done.stdout
    report = json.loads((tmp_path / "y.onnx.json").read_text())
    assert report["shrunk"]["applied"] is True


def test_measure_counts_every_multiply_accumulate():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    size = measure(net, (3, 4, 4))
    assert size.macs == (8 * 4 * 4) * (3 * 3 * 3) + 128 * 10
    assert size.params == 8 * 27 + 128 * 10 + 10
