"""BatchNorm statistics of the deployed (binary-mask) network.

Gates train with relaxed, noisy masks, so the running statistics BatchNorm accumulates during
training describe a network that is never deployed. Before every evaluation the statistics are
recomputed from training batches passed through the binary-mask network (cumulative averages,
no gradient, no random draws), so the accuracy a search reports, and the statistics the ticket
stores, are those of what is deployed. Measured effect so far: none worth naming (Conv-2 on
digits, 15 epochs: 57.8% with, 58.1% without); it is here for correctness, at ~50 forward
batches per epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from slt_deploy.data import DataSplit
from slt_deploy.data.base import epoch_generator, normalise

CALIBRATION_BATCHES = 50


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm_(
    model: nn.Module,
    data: DataSplit,
    batch_size: int,
    seed: int,
    device: torch.device,
    batches: int = CALIBRATION_BATCHES,
) -> None:
    layers = batchnorm_layers(model)
    if not layers:
        return
    was_training = model.training
    model.eval()  # masked layers apply the binary mask
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the calibration batches
        layer.train()
    order = torch.randperm(len(data.train_y), generator=epoch_generator(seed, -1))
    for start in range(0, min(len(order), batches * batch_size), batch_size):
        index = order[start : start + batch_size]
        model(normalise(data.train_x[index].to(device), data.spec))
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum
    model.train(was_training)
