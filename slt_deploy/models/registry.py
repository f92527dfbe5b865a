"""One way to build a model everywhere (search, export, tests): `create_model(spec, data)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from torch import nn

from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(str(data["name"]), dict(data.get("kwargs", {})))


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Builders take `input_shape` and `num_classes` plus their own keyword arguments."""
    return MODELS.register(name)


# Families of models named by a prefix ("timm:resnet50"): prefix -> builder taking the rest of
# the name first. models/timm_nets.py registers "timm:" (the registry never imports it).
PREFIXES: dict[str, Callable[..., nn.Module]] = {}


def _builder(name: str) -> Builder:
    for prefix, build in PREFIXES.items():
        if name.startswith(prefix):
            return partial(build, name[len(prefix) :])
    return MODELS.get(name)


def create_model(spec: ModelSpec, data: DataSpec) -> nn.Module:
    builder = _builder(spec.name)
    accepted = inspect.signature(builder).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(set(spec.kwargs) - set(accepted))
    if unknown and not open_ended:
        raise SltError(f"model {spec.name!r} does not take {', '.join(unknown)}")
    return builder(input_shape=tuple(data.input_shape), num_classes=data.num_classes, **spec.kwargs)
