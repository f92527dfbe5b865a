"""2:4 semi-structured tickets: search, verification, projection, compressed form."""

import json

import pytest
import torch

from slt_deploy.errors import SltError
from slt_deploy.export import ExportRequest, export
from slt_deploy.masking.structure import compress_24, is_24, keep_top2_of_4
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search


def test_top2_of_4_groups_run_along_input_channels():
    scores = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).view(2, 8, 3, 3)
    keep = keep_top2_of_4(scores)
    assert is_24(keep) and int(keep.sum()) == scores.numel() // 2
    # within a group (out, 4 input channels, same kernel position) the 2 largest survive
    assert keep[0, 2:4, 1, 1].all() and not keep[0, 0:2, 1, 1].any()
    assert not is_24(torch.ones(3, 8, dtype=torch.bool))


def test_compressed_form_rebuilds_the_weight():
    weight = torch.randn(6, 8) * keep_top2_of_4(torch.randn(6, 8))
    parts = compress_24(weight)
    rebuilt = torch.zeros(6, 2, 4).scatter_(-1, parts["indices"].long(), parts["values"])
    assert torch.equal(rebuilt.view(6, 8), weight)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("24")
    structured = search(
        SearchConfig(data="digits", epochs=25, target_sparsity=0.6, granularity="2:4"),
        root / "s24",
        progress=False,
    )
    unstructured = search(
        SearchConfig(data="digits", epochs=25, target_sparsity=0.6), root / "u", progress=False
    )
    return root, structured, unstructured


def test_search_24_meets_pattern_and_target(runs):
    _, summary, _ = runs
    assert abs(summary["sparsity"] - 0.6) <= 0.01 and summary["test_accuracy"] > 0.8
    assert {v["pattern"] for v in summary["per_layer"].values()} == {"2:4"}


def test_export_24_verifies_and_projects(runs, tmp_path):
    root, structured, _ = runs
    report = export(ExportRequest(root / "s24", "2:4", tmp_path / "s.onnx"))
    assert report["pattern_24_layers"] == ["fc1", "fc2", "fc3"]
    assert report["projection"] == {"projected_layers": []}
    assert report["weights_kept"] + report["dead_path_weights_removed"] == structured["params_kept"]
    # fc1..fc3 of LeNet-300-100 on 8x8 digits: half the weights as fp32 + 2 bits per kept one
    kept_values = (300 * 64 + 100 * 300 + 10 * 100) // 2
    assert report["compressed_24_bytes"] == kept_values * 4 + kept_values * 2 // 8
    assert not (tmp_path / "s.onnx.2to4.safetensors").exists()
    projected = export(ExportRequest(root / "u", "2:4", tmp_path / "p.onnx"))
    assert projected["projection"]["projected_layers"]
    assert projected["projection"]["accuracy_change"] is not None
    assert json.loads((tmp_path / "p.onnx.json").read_text())["format"] == "2:4"


def test_unstructured_slt_cannot_be_projected(runs, tmp_path):
    root, _, _ = runs
    export(ExportRequest(root / "u", "slt", tmp_path / "u.slt"))
    with pytest.raises(SltError, match="not 2:4"):
        export(ExportRequest(tmp_path / "u.slt", "2:4", tmp_path / "x.onnx"))


def test_24_needs_gates_and_half_sparsity():
    with pytest.raises(SltError, match=r">= 0\.5"):
        SearchConfig(granularity="2:4", target_sparsity=0.3).validate()
    with pytest.raises(SltError, match="gates search"):
        SearchConfig(granularity="2:4", method="edge-popup", target_sparsity=0.6).validate()


def test_recorded_config_is_explicit(runs):
    root, _, _ = runs
    config = json.loads((root / "u" / "config.json").read_text())
    for key in ("init", "optimizer", "lr", "scale_fan", "compile", "init_gain"):
        assert config[key] is not None, key
    assert config["loss_temperature"] in ("learned", "none")
