"""The Python API (slt_deploy/api.py): search, export and bench as a user calls them from
Python, each with its config object, giving what the CLI gives."""

from __future__ import annotations

import hashlib

from conftest import run_cli

from slt_deploy.api import (
    BenchRequest,
    ExportRequest,
    SearchConfig,
    TimingPolicy,
    bench,
    export,
    search,
)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_search_export_bench_from_python_match_the_cli(tmp_path):
    run = tmp_path / "run"
    config = SearchConfig(data="digits", max_steps=30, target_sparsity=0.9, seed=0)
    summary = search(config, run, progress=False)
    assert summary["sparsity"] > 0.5

    report = export(ExportRequest(run, "onnx", tmp_path / "api.onnx"))
    assert report["parity"]["max_abs_diff"] <= report["parity"]["tolerance"]
    # the CLI builds the same request from its options: the same bytes
    done = run_cli("export", str(run), "--format", "onnx", "--out", str(tmp_path / "cli.onnx"))
    assert done.returncode == 0, done.stderr
    assert _sha(tmp_path / "api.onnx") == _sha(tmp_path / "cli.onnx")

    quick = TimingPolicy(warmup_seconds=0.0, min_iterations=3, min_seconds=0.0)
    rows = bench(BenchRequest((str(tmp_path / "api.onnx"), str(run)), policy=quick, memory=False))
    assert [(r["artifact_kind"], r["backend"]) for r in rows] == [
        ("onnx", "ort"),
        ("ticket", "torch"),
    ]
