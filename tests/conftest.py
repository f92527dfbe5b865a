"""Shared test settings. Real data sets come from one place: $SLT_DEPLOY_DATA, defaulting to
../shared/data beside the project; tests that need them skip with the reason when absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SLT_DEPLOY_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _data_dir(name: str) -> Path:
    path = DATA_ROOT / name
    if not path.exists():
        pytest.skip(f"{name} not found at {path} (set SLT_DEPLOY_DATA to the shared data folder)")
    return path


@pytest.fixture
def mnist_dir() -> Path:
    return _data_dir("mnist")


@pytest.fixture
def fashion_dir() -> Path:
    return _data_dir("fashion-mnist")


@pytest.fixture
def cifar_tar() -> Path:
    return _data_dir("cifar10-jpeg.tar")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-data caches go to a per-session temporary folder, never the user's home."""
    monkeypatch.setenv("SLT_DEPLOY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


def run_cli(*args: str, **kwargs):
    """`python -m slt_deploy ARGS` in a real subprocess, output captured."""
    import subprocess

    return subprocess.run(
        [PYTHON, "-m", "slt_deploy", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        **kwargs,
    )
