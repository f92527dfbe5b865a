"""What an export reads: the network behind the source, and images of its data set for the
parity check, the accuracy check and int8 calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slt_deploy.errors import SltError
from slt_deploy.export.network import Deployable, from_ticket
from slt_deploy.export.request import ExportRequest

PARITY_SAMPLES = 256
CALIBRATION_BATCH = 64
CALIBRATION_SEED = 0


def load_deployable(
    source: str | Path,
    threshold: float | None = None,
    sparsity: float | None = None,
    pattern_24: bool = False,
) -> Deployable:
    """A run directory, a ticket (.safetensors) or an .slt file; `pattern_24` projects a
    ticket's mask to 2:4 where it is not."""
    from slt_deploy.export import slt_format
    from slt_deploy.search.ticket import load_ticket

    source = Path(source)
    if source.is_file() and source.suffix == ".slt":
        if threshold is not None or sparsity is not None:
            raise SltError("an .slt ticket holds binary masks already: no --threshold/--sparsity")
        return slt_format.read(source)
    return from_ticket(load_ticket(source), threshold, sparsity, pattern_24)


def dataset(net: Deployable, request: ExportRequest):
    """(name, split) of --data/--data-dir, else of the data set the ticket was searched on;
    SltError where it cannot be read."""
    from slt_deploy.data import load_dataset

    name = request.data or net.source.get("data") or net.data.name
    return name, load_dataset(name, request.data_dir or net.source.get("data_dir"))


def parity_inputs(net: Deployable, request: ExportRequest) -> tuple[torch.Tensor, str]:
    """Real test inputs of the ticket's data set (or of --data/--data-dir); the report says
    which. Random inputs only when no data set can be read, and the report says so too."""
    from slt_deploy.data.base import normalise

    try:
        name, split = dataset(net, request)
        if tuple(split.spec.input_shape) != tuple(net.data.input_shape):
            raise SltError("input shape differs")
        return normalise(split.test_x[:PARITY_SAMPLES], net.data), f"{name} test split"
    except SltError:
        generator = torch.Generator().manual_seed(0)
        shape = (PARITY_SAMPLES, *net.data.input_shape)
        return torch.randn(shape, generator=generator), "random normal (data set not found)"


def calibration_batches(net: Deployable, request: ExportRequest) -> list:
    """Training images of the ticket's data set (or --data), for static int8's activation
    ranges; a clear error where there are none (dynamic int8 needs none)."""
    from slt_deploy.data.base import normalise

    try:
        name, split = dataset(net, request)
    except SltError as exc:
        raise SltError(
            f"static int8 calibrates on training images and {exc}; pass --data/--data-dir, "
            "or --int8-activations dynamic"
        ) from None
    if tuple(split.spec.input_shape) != tuple(net.data.input_shape):
        raise SltError(f"{name} images are not the {tuple(net.data.input_shape)} this ticket takes")
    return fixed_sample(normalise(split.train_x, net.data), request.int8.calibration_samples)


def fixed_sample(images: torch.Tensor, samples: int) -> list[np.ndarray]:
    """A seeded, fixed sample of training images (normalised), in batches: the same sample
    every export, so the activation scales and the file are the same too."""
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    order = torch.randperm(len(images), generator=generator)[:samples]
    chosen = images[order].numpy().astype(np.float32)
    return [chosen[i : i + CALIBRATION_BATCH] for i in range(0, len(chosen), CALIBRATION_BATCH)]
