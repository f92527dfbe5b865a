"""The paper's architectures through timm (and WRN-28-10): each searches end to end on real
CIFAR-10 images in seconds, exports consistently, and the known traps are handled."""

import json

import pytest
import torch
from conftest import ROOT, run_cli

from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.evaluate import evaluate_artifact
from slt_deploy.export import ExportRequest, export
from slt_deploy.masking.layers import masked_layers
from slt_deploy.models import ModelSpec, create_model
from slt_deploy.search.config import SearchConfig, load_recipe
from slt_deploy.search.loop import search
from slt_deploy.search.methods import METHODS, init_spec

CIFAR = DataSpec(
    name="cifar10", input_shape=(3, 32, 32), num_classes=10, mean=[0.5] * 3, std=[0.25] * 3
)


def _tiny(model: str, cifar_tar, **kw) -> SearchConfig:
    settings = dict(
        model=model, data="cifar10", data_dir=str(cifar_tar), subset=32, max_steps=1,
        batch_size=16, eval_batch_size=32, target_sparsity=0.5,
    )  # fmt: skip
    return SearchConfig(**{**settings, **kw})


@pytest.mark.parametrize(
    "model",
    ["resnet18", "resnet50", "wide_resnet50_2", "wrn-28-10", "vit_tiny", "vit_small", "vit_base",
     "swin_tiny"],
)  # fmt: skip
def test_every_architecture_searches_to_a_summary(model, cifar_tar, tmp_path):
    summary = search(_tiny(model, cifar_tar), tmp_path / "run", progress=False)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["test_accuracy"] == summary["test_accuracy"]
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and 0.0 < summary["sparsity"] < 1.0
    assert (tmp_path / "run" / "ticket.safetensors").is_file()


@pytest.mark.parametrize("model", ["resnet18", "vit_tiny"])
def test_exported_onnx_gives_the_searched_accuracy(model, cifar_tar, tmp_path):
    summary = search(_tiny(model, cifar_tar, method="edge-popup"), tmp_path / "run", progress=False)
    report = export(ExportRequest(tmp_path / "run", "onnx", tmp_path / "m.onnx"))
    assert report["parity"]["same_predictions"] == 1.0
    again = evaluate_artifact(tmp_path / "m.onnx", "cifar10", str(cifar_tar), subset=32)
    assert again["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1 / 32 + 1e-9)


def _prepared(model: str, config: SearchConfig | None = None):
    config = config or SearchConfig(model=model, data="cifar10", target_sparsity=0.5)
    from slt_deploy.search.ticket import build_search_model

    return build_search_model(config, CIFAR)


def test_resnet_traps_cifar_stem_and_zero_init_last():
    plain = create_model(ModelSpec("resnet18"), CIFAR)
    assert plain.conv1.kernel_size == (3, 3) and plain.conv1.stride == (1, 1)
    assert isinstance(plain.maxpool, torch.nn.Identity)
    assert plain.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)  # not 1x1
    for block in (*plain.layer1, *plain.layer4):
        assert torch.all(block.bn2.weight == 1.0)  # zero_init_last is off
    wide = create_model(
        ModelSpec("resnet18"), DataSpec("x", (3, 224, 224), 10, [0.5] * 3, [0.25] * 3)
    )
    assert wide.conv1.kernel_size == (7, 7)  # ImageNet resolution keeps the ImageNet stem


def test_swin_keeps_real_shifted_windows_at_32px():
    swin = create_model(ModelSpec("swin_tiny"), CIFAR)
    first = swin.layers[0].blocks
    assert first[0].window_size == (4, 4) and first[1].shift_size == (2, 2)
    assert first[1].attn_mask is not None


def test_everything_but_the_mask_is_frozen_and_travels_in_the_ticket(cifar_tar, tmp_path):
    model = _prepared("vit_tiny")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".mask_source." in n for n in trainable)
    gated = [n for n, _ in masked_layers(model)]
    assert "patch_embed.proj" in gated and "blocks.0.attn.qkv" in gated and "head" in gated
    pos = model.pos_embed.detach().clone()
    config = _tiny("vit_tiny", cifar_tar, max_steps=2)
    search(config, tmp_path / "a", progress=False)
    search(config, tmp_path / "b", progress=False)
    a = (tmp_path / "a" / "ticket.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "ticket.safetensors").read_bytes()  # seeded, repeatable
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "a" / "ticket.safetensors"))["pos_embed"], pos)


def test_any_timm_model_by_name_and_clear_errors(cifar_tar):
    model = create_model(
        ModelSpec("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}), CIFAR
    )
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    resized = create_model(ModelSpec("timm:resnet18", {"img_size": 64}), CIFAR)
    assert resized.resize.size == (64, 64)
    with pytest.raises(SltError, match="timm has no model"):
        create_model(ModelSpec("timm:no_such_net"), CIFAR)
    done = run_cli("search", "--model", "timm:no_such_net", "--data", "cifar10", "--data-dir",
                   str(cifar_tar), "--max-steps", "1", "--out", "/tmp/never")  # fmt: skip
    assert done.returncode == 2 and "timm has no model" in done.stderr
    assert "Traceback" not in done.stderr


def test_method_surgery_counts_gated_weights():
    model = _prepared("resnet18")
    total = sum(layer.frozen_weight.numel() for _, layer in masked_layers(model))
    plain = create_model(ModelSpec("resnet18"), CIFAR)
    convs = [m for m in plain.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert total == sum(m.weight.numel() for m in convs)
    assert init_spec(SearchConfig(model="resnet18")).seed == 0 and "gates" in METHODS.names()


RECIPES = sorted((ROOT / "search" / "recipes").glob("*.toml"))


def test_recipes_cover_the_paper_settings_and_validate():
    names = {p.stem for p in RECIPES}
    assert {"lenet-300-100-mnist", "conv4-cifar10", "conv6-cifar10", "resnet18-cifar10",
            "resnet50-cifar10", "wrn-28-10-cifar10", "vit-tiny-cifar10",
            "swin-tiny-cifar10"} <= names  # fmt: skip
    for path in RECIPES:
        config = SearchConfig.from_dict(load_recipe(path)).validate()
        data = CIFAR if "cifar" in path.stem else DataSpec("mnist", (1, 28, 28), 10, [0.1], [0.3])
        create_model(ModelSpec(config.model, config.model_kwargs), data)


def test_recipe_with_command_line_overrides(cifar_tar, tmp_path):
    recipe = ROOT / "search" / "recipes" / "vit-tiny-cifar10.toml"
    done = run_cli(
        "search", "--recipe", str(recipe), "--data-dir", str(cifar_tar), "--subset", "32",
        "--max-steps", "1", "--batch-size", "16", "--img-size", "32", "--patch-size", "8",
        "--out", str(tmp_path / "run"), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == "vit_tiny" and config["epochs"] == 100
    assert (
        config["model_kwargs"] == {"patch_size": 8, "img_size": 32} and config["batch_size"] == 16
    )
