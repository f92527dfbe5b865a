"""ResNet, Wide-ResNet, ViT and Swin from timm (`pretrained=False`: nothing is downloaded),
built for the data set's resolution; `timm:<name>` builds any other timm model.

Traps handled here, each tested (tests/test_architectures.py):
- timm ResNets zero the last BN scale of every residual block (`zero_init_last`); with a
  frozen affine BN that silences every residual branch, so it is always off.
- The ImageNet stem (7x7 stride 2 + max-pool) leaves a 1x1 map at 32 px: below 64 px the
  stem becomes a 3x3 stride-1 conv without max-pool (`cifar_stem`, as in the paper's setting).
- ViT at 32 px: patch 4 (64 tokens). Swin at 32 px with patch 4 has 8x8 tokens, so window 7
  covers the whole map and shifted windows vanish; patch 2 and window 4 keep real windows in
  the first two stages.
- `import timm` needs torchvision: the error says which pair to install.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.models.registry import PREFIXES, register_model

SMALL_INPUT = 64  # px: at or below this, models get the CIFAR-resolution settings

# alias -> (timm name, family)
ALIASES = {
    "resnet18": ("resnet18", "resnet"),
    "resnet50": ("resnet50", "resnet"),
    "wide_resnet50_2": ("wide_resnet50_2", "resnet"),
    "vit_tiny": ("vit_tiny_patch16_224", "vit"),
    "vit_small": ("vit_small_patch16_224", "vit"),
    "vit_base": ("vit_base_patch16_224", "vit"),
    "swin_tiny": ("swin_tiny_patch4_window7_224", "swin"),
}


def import_timm():
    try:
        import timm
    except ImportError as exc:
        raise SltError(
            f"timm models need timm and torchvision ({exc}); install the pair that matches "
            "torch, e.g. pip install timm torch==2.14.1 torchvision==0.29.1"
        ) from None
    return timm


def family_of(timm_name: str) -> str:
    for prefix, family in (("resnet", "resnet"), ("wide_resnet", "resnet"), ("resnext", "resnet"),
                           ("vit_", "vit"), ("deit", "vit"), ("swin", "swin")):  # fmt: skip
        if timm_name.startswith(prefix):
            return family
    return "other"


def build_timm(
    timm_name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cifar_stem: bool | None = None,
    **kwargs,
) -> nn.Module:
    """A timm model at the data set's resolution. `img_size` other than the data's adds an
    input resize in front (module `resize`, the network under `net`)."""
    timm = import_timm()
    if len(input_shape) != 3:
        raise SltError(f"timm models take images (C, H, W); the data set gives {input_shape}")
    channels, height, _ = input_shape
    family = family_of(timm_name)
    small = height <= SMALL_INPUT
    options: dict = {"pretrained": False, "num_classes": num_classes, "in_chans": channels}
    if family == "resnet":
        options["zero_init_last"] = False
    elif family == "vit":
        options.update(img_size=height, patch_size=4 if small else 16)
    elif family == "swin":
        options.update(img_size=height, **({"patch_size": 2, "window_size": 4} if small else {}))
    options.update(kwargs)
    img_size = options.get("img_size", height)
    if family == "resnet" and "img_size" in options:
        options.pop("img_size")
    try:
        model = timm.create_model(timm_name, **options)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise SltError(f"timm has no model {timm_name!r}") from None
        raise SltError(f"timm cannot build {timm_name!r}: {exc}") from None
    except (TypeError, ValueError, AssertionError) as exc:
        raise SltError(f"timm cannot build {timm_name!r} with {kwargs}: {exc}") from None
    if family == "resnet" and (small if cifar_stem is None else cifar_stem):
        stem = model.conv1
        if not isinstance(stem, nn.Conv2d):
            raise SltError(f"{timm_name}: the CIFAR stem needs a single-conv stem")
        model.conv1 = nn.Conv2d(channels, stem.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    if img_size != height:
        resize = nn.Upsample(size=(img_size, img_size), mode="bilinear", align_corners=False)
        model = nn.Sequential(OrderedDict(resize=resize, net=model))
    return model


def _alias_builder(alias: str):
    timm_name, _ = ALIASES[alias]

    def build(input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
        return build_timm(timm_name, input_shape, num_classes, **kwargs)

    build.__doc__ = f"timm's {timm_name} at the data set's resolution."
    return build


for _alias in ALIASES:
    register_model(_alias)(_alias_builder(_alias))
PREFIXES["timm:"] = build_timm  # any timm model, by its timm name
