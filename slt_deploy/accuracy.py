"""Test accuracy, one way for every stage: a predictor (a batch of raw images in, class
indices out) run over a split in batches, the images normalised as the network was trained.
The search, `eval` and export's accuracy checks all count correct predictions here."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from slt_deploy.data.base import DataSpec, normalise

Predictor = Callable[[torch.Tensor], np.ndarray | torch.Tensor]


def predictions(
    predict: Predictor,
    images: torch.Tensor,
    spec: DataSpec,
    batch_size: int,
    device: torch.device | None = None,
) -> np.ndarray:
    """Class indices for every image; `device`: where the batch is normalised (the model's)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        x = normalise(batch if device is None else batch.to(device), spec).contiguous()
        got = predict(x)
        out.append(got.cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(
    predict: Predictor,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: DataSpec,
    batch_size: int,
    device: torch.device | None = None,
) -> float:
    correct = predictions(predict, images, spec, batch_size, device) == labels.numpy()
    return float(correct.sum()) / max(1, len(labels))


def torch_predictor(model: nn.Module) -> Predictor:
    """argmax of the model's logits, without autograd (the caller sets eval mode)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(1)

    return predict
