"""Accuracy of an artifact through a `bench` back-end: the runner that times an artifact is the
one that classifies the test set, so `eval` and `bench` cannot disagree on what an artifact
computes. By default each kind runs on its own runtime (ONNX → ONNX Runtime, CSR → torch.sparse,
.slt and tickets → PyTorch); a TensorRT engine needs `--device cuda`."""

from __future__ import annotations

from pathlib import Path

import torch

from slt_deploy.accuracy import accuracy
from slt_deploy.data import load_dataset
from slt_deploy.errors import SltError


def evaluate_artifact(
    path: str | Path,
    data: str,
    data_dir: str | None = None,
    batch_size: int = 1000,
    subset: int | None = None,
    backend: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> dict:
    from slt_deploy.bench.artifacts import inspect
    from slt_deploy.bench.runners import RunnerOptions, runner_for
    from slt_deploy.export.formats import default_backend

    artifact = inspect(path)
    if artifact.kind == "engine" and device != "cuda":
        raise SltError(
            f"{artifact.path}: a TensorRT engine runs on the GPU it was built for: "
            "pass --device cuda (or eval the .onnx it was built from: it computes the same)"
        )
    backend = backend or default_backend(artifact.kind)
    split = load_dataset(data, data_dir).subset(subset)
    with runner_for(artifact, backend, RunnerOptions(device=device, threads=threads)) as runner:
        spec = runner.data or split.spec
        if tuple(spec.input_shape) != tuple(split.spec.input_shape):
            raise SltError(
                f"{artifact.path} takes inputs {tuple(spec.input_shape)}, the data set gives "
                f"{tuple(split.spec.input_shape)}"
            )

        def predict(x: torch.Tensor):
            return runner.logits(runner.prepare(x)).argmax(1)

        correct = accuracy(predict, split.test_x, split.test_y, spec, batch_size)
    return {
        "artifact": str(artifact.path),
        "backend": backend,
        "device": device,
        "runtime": f"{backend} on {device}",
        "data": data,
        "samples": len(split.test_y),
        "accuracy": correct,
    }
