"""Search methods (`--method`): how a model is prepared, what is trained, with which defaults.

Defaults are the settings that measured best on `bench/search_quality.py` (docs/search.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.init import RELU_GAIN, InitSpec
from slt_deploy.masking.channels import channel_plan
from slt_deploy.masking.gates import GATES, GateConfig, NoiseTable
from slt_deploy.masking.hooks import ChannelGateHook, HeadGateHook, InputGateHook
from slt_deploy.masking.sources import ChannelSource, EdgePopupScores, GateSource, MaskSource
from slt_deploy.masking.structure import supports_24
from slt_deploy.masking.surgery import (
    SourceFactory,
    freeze_all_but_masks_,
    gate_,
    gateable,
    init_dense_,
    normalisation_,
)
from slt_deploy.registry import Registry
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import (
    METHOD_DEFAULTS,
    Defaults,
    default_init,
    default_lr,
    default_sigma,
)
from slt_deploy.search.stats import output_positions


@dataclass(frozen=True)
class Method:
    name: str
    defaults: Defaults
    penalised: bool  # has an expected-L0 penalty (gates)

    def prepare(
        self,
        model: nn.Module,
        config: SearchConfig,
        init: InitSpec,
        input_shape: tuple[int, ...],
    ) -> nn.Module:
        """The method's surgery on a freshly built model; `input_shape` is one sample's."""
        raise NotImplementedError


METHODS: Registry[Method] = Registry("method")


def _masked(
    model: nn.Module, config: SearchConfig, init: InitSpec, source: SourceFactory
) -> nn.Module:
    """The surgery every mask method shares: BatchNorm as configured, then every gateable
    layer masked with a source from `source`."""
    return gate_(
        normalisation_(model, config.affine_bn), source, init, learn_bias=config.learn_bias
    )


def gate_config(config: SearchConfig) -> GateConfig:
    return GateConfig(
        family=config.gate,
        sigma=default_sigma(config) if config.sigma is None else config.sigma,
        init=config.gate_init,
        threshold=config.threshold,
        noise=config.noise,
        compile=bool(config.compile),
    )


def _shared_noise(gates: GateConfig, largest: int, seed: int) -> NoiseTable | None:
    """One noise table for every gate of the network, sized for its largest gated layer."""
    return NoiseTable(largest, seed) if gates.noise == "table" else None


class GatesMethod(Method):
    def prepare(
        self,
        model: nn.Module,
        config: SearchConfig,
        init: InitSpec,
        input_shape: tuple[int, ...],
    ) -> nn.Module:
        if config.granularity.startswith("channel"):
            return prepare_channel_gates(model, config, init, input_shape)
        family = GATES.get(config.gate)
        gates = gate_config(config)
        largest = max(
            (m.weight.numel() for n, m in model.named_modules() if gateable(m, n)), default=0
        )
        noise = _shared_noise(gates, largest, config.seed)
        # --cost flops: each gate weighs the multiply-adds its weight costs (stats.py)
        positions = output_positions(model, input_shape) if config.cost == "flops" else {}

        def source(name: str, shape: tuple[int, ...]) -> MaskSource:
            pattern = (
                "2:4" if config.granularity == "2:4" and supports_24(shape) else ("unstructured")
            )
            return GateSource(family(shape, gates, noise), pattern, float(positions.get(name, 1)))

        return freeze_all_but_masks_(_masked(model, config, init, source), config.affine_bn)


class EdgePopupMethod(Method):
    def prepare(
        self,
        model: nn.Module,
        config: SearchConfig,
        init: InitSpec,
        input_shape: tuple[int, ...],
    ) -> nn.Module:
        density = 1.0 - float(config.target_sparsity)

        def source(name: str, shape: tuple[int, ...]) -> MaskSource:
            return EdgePopupScores(shape, density)

        return freeze_all_but_masks_(_masked(model, config, init, source), config.affine_bn)


class DenseMethod(Method):
    def prepare(
        self,
        model: nn.Module,
        config: SearchConfig,
        init: InitSpec,
        input_shape: tuple[int, ...],
    ) -> nn.Module:
        return init_dense_(
            normalisation_(model, config.affine_bn), init, learn_bias=config.learn_bias
        )


def prepare_channel_gates(
    model: nn.Module, config: SearchConfig, init: InitSpec, input_shape: tuple[int, ...]
) -> nn.Module:
    """Gates per removable output channel (channels.py decides which), hooked in after each
    gated layer's BatchNorm, and every layer's input columns linked to its producer's gates."""
    plan = channel_plan(model, input_shape)
    family = GATES.get(config.gate)
    gates = gate_config(config)
    largest = max((layer.weights for layer in plan.shapes.values()), default=0)
    noise = _shared_noise(gates, largest, config.seed)
    sources: dict[str, ChannelSource] = {}

    def source(name: str, shape: tuple[int, ...]) -> MaskSource:
        group = plan.groups.get(name)
        gate = family((group.channels,), gates, None) if group is not None else None
        weight_gate = family(shape, gates, noise) if per_weight(name) else None
        input_gate = family((shape[1],), gates, None) if name in plan.inputs else None
        layer = plan.shapes.get(name)
        positions = layer.positions if layer is not None and config.cost == "flops" else 1
        sources[name] = ChannelSource(
            gate,
            shape,
            float(positions),
            weight_gate,
            input_gate,
            structure_only=config.target_scope == "structure",
        )
        return sources[name]

    def per_weight(name: str) -> bool:
        """A gate per weight as well: everywhere with channel+unstructured; on the
        classifier alone with channel. Its rows are the classes and can never go, and an
        ungated classifier is a fixed random readout that caps accuracy (LeNet-300-100 on
        MNIST, 3 epochs at 77%: 55% without, 71% with; docs/structured.md). Its zeros fold
        into a dense classifier of unchanged shape."""
        return config.granularity == "channel+unstructured" or name in plan.outputs

    if not plan.groups:
        raise SltError(f"--granularity channel: {config.model} has no removable channels")
    model = _masked(model, config, init, source)
    for name in plan.inputs:  # input features (pixels) of a first linear layer
        model.get_submodule(name).register_forward_pre_hook(InputGateHook(sources[name], name))
    for group in plan.groups.values():
        producer = sources[group.producer]
        for consumer, repeat in group.consumers:
            sources[consumer].link(producer, repeat)
        where = model.get_submodule(group.gate_after)
        if group.attention is not None:
            producer.rows_per_gate = group.expand_rows
            where.register_forward_pre_hook(HeadGateHook(producer, group.head_dim, group.producer))
        else:
            conv = len(producer.shape) == 4
            where.register_forward_hook(ChannelGateHook(producer, conv, group.producer))
    return freeze_all_but_masks_(model, config.affine_bn)


METHODS.register("gates")(GatesMethod("gates", METHOD_DEFAULTS["gates"], penalised=True))
METHODS.register("edge-popup")(
    EdgePopupMethod("edge-popup", METHOD_DEFAULTS["edge-popup"], penalised=False)
)
METHODS.register("dense")(DenseMethod("dense", METHOD_DEFAULTS["dense"], penalised=False))


def init_spec(config: SearchConfig) -> InitSpec:
    """The frozen-weight spec; with scale_fan, std grows by 1/√(kept fraction) (InitSpec)."""
    method = METHODS.get(config.method)
    scale_fan = method.defaults.scale_fan if config.scale_fan is None else config.scale_fan
    density = 1.0 - config.target_sparsity if scale_fan and config.target_sparsity else 1.0
    return InitSpec(
        scheme=config.init or default_init(config),
        seed=config.seed,
        gain=RELU_GAIN if config.init_gain is None else config.init_gain,
        density=density,
    )


def build_optimizer(
    model: nn.Module, config: SearchConfig, extra: nn.Module | None = None
) -> torch.optim.Optimizer:
    """Mask parameters (gates, scores) get their own group with weight decay 0 for gates."""
    method = METHODS.get(config.method)
    d = method.defaults
    name = config.optimizer or d.optimizer
    lr = default_lr(config) if config.lr is None else config.lr
    momentum = d.momentum if config.momentum is None else config.momentum
    weight_decay = d.weight_decay if config.weight_decay is None else config.weight_decay
    params = [p for p in model.parameters() if p.requires_grad]
    if extra is not None:  # the loss temperature: trained with the mask, never deployed
        params += list(extra.parameters())
    groups = [{"params": params, "weight_decay": 0.0 if method.penalised else weight_decay}]
    if name == "adam":  # fused: one kernel for the whole update (measured: bench/step_cost.py)
        return torch.optim.Adam(groups, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise SltError(f"--optimizer must be adam or sgd, got {name!r}")
