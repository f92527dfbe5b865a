"""Model registry: `@register_model(name)` on a builder, `create_model(spec, data_spec)` to build."""

from slt_deploy.models.registry import MODELS, ModelSpec, create_model, register_model
from slt_deploy.models import dense_nets  # noqa: F401  (registers the built-in models)

__all__ = ["MODELS", "ModelSpec", "create_model", "register_model"]
