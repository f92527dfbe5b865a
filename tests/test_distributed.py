"""torchrun with the gloo back-end and 2 CPU processes: the ticket equals a single-process run
with the same global batch (within float summation order), only rank 0 writes, a distributed
run resumes after SIGKILL to the same bytes, and rank 0's refusal stops every rank."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli_env, run_cli
from safetensors.torch import load_file

TORCHRUN = shutil.which("torchrun")
# --preset gates-v1 (uniform weights, t = 1): the ranks' equivalence is what this tests, at the
# noise level where it can be bounded tightly. At the defaults the same noise grows: sharpened
# gates multiply the gradient by up to 1/t = 20, and one run measured mean |Δμ| 3e-4 and 93 of
# 266,200 bits flipped (accuracy 89.33% vs 89.30%); signed-constant weights at t = 1: 2.9e-5, 5.
ARGS = ("search", "--data", "mnist", "--subset", "6000", "--epochs", "3",
        "--target-sparsity", "0.8", "--batch-size", "64", "--seed", "7",
        "--preset", "gates-v1", "--quiet")  # fmt: skip
# Adam magnifies summation-order noise in near-zero gradients, so μ differs a little after 282
# steps, and summation order can flip a few of the 266,200 gates that sit on τ (one CI run:
# sparsity 0.7989557 vs 0.7989594, one bit). The bounds below allow for both.
MEAN_TOLERANCE, MAX_TOLERANCE, FLIP_TOLERANCE, ACCURACY_TOLERANCE = 1e-5, 1e-2, 1e-4, 0.005

pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not on PATH")


def _torchrun(*args: str, **kwargs) -> subprocess.Popen:
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "slt_deploy", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, **kwargs,
    )  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """All processes below `pid` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    from conftest import DATA_ROOT

    if not (DATA_ROOT / "mnist").exists():
        pytest.skip(f"mnist not found at {DATA_ROOT / 'mnist'} (set SLT_DEPLOY_DATA)")
    return (*ARGS, "--data-dir", str(DATA_ROOT / "mnist"))


@pytest.fixture(scope="module")
def runs(args, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    single = run_cli(*args, "--out", str(root / "single"))
    assert single.returncode == 0, single.stderr
    code, err = _finish(_torchrun(*args, "--out", str(root / "ddp")))
    assert code == 0, err
    return root


def test_two_ranks_equal_one_process_with_the_same_global_batch(runs):
    one = load_file(str(runs / "single" / "ticket.safetensors"))
    two = load_file(str(runs / "ddp" / "ticket.safetensors"))
    assert one.keys() == two.keys()
    for k in one:
        delta = (one[k].double() - two[k].double()).abs()
        assert delta.mean() <= MEAN_TOLERANCE and delta.max() <= MAX_TOLERANCE, k
    mu = [k for k in one if k.endswith("gate_mean")]  # stg keeps a weight where μ > τ = 0.5
    flips = sum(int(((one[k] > 0.5) != (two[k] > 0.5)).sum()) for k in mu)
    total = sum(one[k].numel() for k in mu)
    assert flips <= FLIP_TOLERANCE * total
    s1 = json.loads((runs / "single" / "summary.json").read_text())
    s2 = json.loads((runs / "ddp" / "summary.json").read_text())
    # Each flipped bit moves the kept count by one, so the sparsities differ by at most
    # flips / total (exactly what the tolerance above allows; bit-equal sparsity was asserted
    # here once and failed one CI run in several: issue 16). A handful of flipped weights out
    # of 266,200 moves a few test predictions at most: 0.5 points is a bound, not a noise band.
    assert s1["params_kept"] - s2["params_kept"] in range(-flips, flips + 1)
    assert abs(s1["sparsity"] - s2["sparsity"]) <= flips / total + 1e-12
    assert abs(s1["test_accuracy"] - s2["test_accuracy"]) <= ACCURACY_TOLERANCE
    files = sorted(p.name for p in (runs / "ddp").iterdir())
    assert files == sorted(p.name for p in (runs / "single").iterdir())  # rank 1 wrote nothing


def test_distributed_resume_after_sigkill_gives_the_same_bytes(args, runs, tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(*args, "--out", str(out))
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.01)
    for pid in [*_descendants(proc.pid), proc.pid]:  # both ranks (own sessions) and the agent
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    assert not (out / "ticket.safetensors").exists(), "finished before it could be killed"
    code, err = _finish(_torchrun(*args, "--out", str(out), "--resume"))
    assert code == 0, err
    ticket = (out / "ticket.safetensors").read_bytes()
    assert ticket == (runs / "ddp" / "ticket.safetensors").read_bytes()


def test_rank_zero_refusal_reaches_every_rank(args, runs):
    code, err = _finish(_torchrun(*args, "--out", str(runs / "ddp")))  # exists, no --force
    assert code != 0
    assert err.count("exists; pass --resume to continue it or --force") == 2  # both ranks say it
    assert "Traceback" not in "".join(line for line in err.splitlines() if "[rank" in line)
