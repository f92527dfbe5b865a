"""Model registry: `@register_model(name)` on a builder; `create_model(spec, data)` builds."""

from slt_deploy.models import (  # noqa: F401  (registers the built-in models)
    dense_nets,
    timm_nets,
    wide_resnet,
)
from slt_deploy.models.registry import MODELS, ModelSpec, create_model, register_model

__all__ = ["MODELS", "ModelSpec", "create_model", "register_model"]
