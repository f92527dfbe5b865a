"""The GPU lease's first lane (bench/gpu_deploy.py) in its CPU dry run: a lease is too short
to meet a broken script."""

import json
import subprocess

from conftest import PYTHON, ROOT, cli_env


def test_gpu_deploy_dry_run_measures_every_candidate_and_the_shrunk_resnet(cifar_tar, tmp_path):
    result = subprocess.run(
        [
            PYTHON,
            str(ROOT / "bench" / "gpu_deploy.py"),
            "--out",
            str(tmp_path),
            "--data",
            str(cifar_tar),
            "--dry-run",
            "--seconds",
            "0.01",
            "--layers",
            "vit-proj,vit-mlp-block",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((tmp_path / "gpu_deploy.json").read_text())
    labels = {(r["case"], r["candidate"]) for r in out["layers"]}
    for case in ("vit-proj", "vit-mlp-block"):
        for candidate in ("ort fp32", "torch fp32", "torch csr fp32 90%", "torch csr fp32 99%"):
            assert (case, candidate) in labels
    assert all("2:4 not run" in r["notes"][0] for r in out["layers"])  # CUDA only: said so
    shrunk = [r for r in out["resnet18_channel"] if r["artifact"].endswith("r18.shrunk.onnx")]
    assert len(shrunk) == 1 and shrunk[0]["shrunk"]["params_ratio"] < 1.0
    assert "| resnet18 channel |" in (tmp_path / "gpu_deploy.txt").read_text()


def test_step_cost_runs_every_variant_through_the_search_loops_own_step():
    """bench/step_cost.py resolves its configs as the search loop does; a refactor of that path
    once broke it unnoticed (config.resolved was renamed)."""
    result = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "step_cost.py"), "--model", "fc", "--width", "32",
         "--depth", "1", "--batch-size", "8", "--rounds", "1", "--steps", "1",
         "--run-steps", "10", "--threads", "1"],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for variant in ("dense", "gates", "gates, sharpening", "edge-popup"):
        assert f"| {variant} |" in result.stdout, variant


def test_gate_state_reads_a_run_directory(tmp_path):
    """bench/gate_state.py on a real (short) gates run: one epoch row each, one layer row each."""
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search

    config = SearchConfig(data="digits", epochs=2, target_sparsity=0.8)
    search(config, tmp_path / "g", progress=False)
    result = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "gate_state.py"), str(tmp_path / "g")],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 1 |" in result.stdout and "| 2 |" in result.stdout
    for layer in ("fc1", "fc2", "fc3"):
        assert f"| {layer} |" in result.stdout, layer


def test_dead_paths_and_live_units_of_a_ticket(tmp_path):
    """bench/dead_paths.py and gate_state.py --paths on a sparse edge-popup ticket, which keeps
    weights on dead paths: the same logits, fewer weights, one latency row per batch size."""
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search

    config = SearchConfig(data="digits", epochs=3, method="edge-popup", target_sparsity=0.97)
    search(config, tmp_path / "ep", progress=False)
    script = str(ROOT / "bench" / "dead_paths.py")
    result = subprocess.run(
        [PYTHON, script, str(tmp_path / "ep"), "--batch-size", "1,8", "--min-seconds", "0.05"],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max |Δ logits| between the two networks on 256 random inputs: 0.0e+00" in result.stdout
    assert "kept weights on dead paths" in result.stdout
    assert f"| {tmp_path / 'ep'} | 1 |" in result.stdout
    assert f"| {tmp_path / 'ep'} | 8 |" in result.stdout
    paths = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "gate_state.py"), "--paths", str(tmp_path / "ep")],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert paths.returncode == 0, paths.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in paths.stdout.splitlines()
            if line.startswith("| fc")}  # fmt: skip
    kept = {name: int(row[0].replace(",", "")) for name, row in rows.items()}
    live = {name: int(row[1].replace(",", "")) for name, row in rows.items()}
    assert kept == {"fc1": 576, "fc2": 900, "fc3": 30}  # 3% of each layer: edge-popup's top-k
    assert sum(live.values()) < sum(kept.values())


def test_accuracy_cost_sweeps_exports_benches_and_reports(mnist_dir, tmp_path):
    """bench/accuracy_cost.py end to end on a small grid: every ticket as CSR against one dense
    ONNX baseline, and the report's cost figure and equal-cost table."""
    result = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "accuracy_cost.py"), "--out", str(tmp_path / "sweep"),
         "--subset", "600", "--epochs", "1", "--val-split", "100", "--sparsities", "0.5,0.9",
         "--min-seconds", "0.05", "--keep-table"],
        capture_output=True, text=True, env={**cli_env(), "SLT_DEPLOY_DATA": str(mnist_dir.parent)},
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads((tmp_path / "sweep" / "bench" / "cpu.json").read_text())
    assert [r["backend"] for r in records] == ["ort"] + ["torch-sparse"] * 4
    assert all(r["baseline"]["artifact"] == records[0]["artifact"] for r in records)
    markdown = (tmp_path / "sweep" / "results.md").read_text()
    assert "![accuracy_vs_cost](accuracy_vs_cost.png)" in markdown
    assert "| gates (stg) | 0.9 |" in markdown.split("## At equal deployed cost")[1]
    assert "| edge-popup-s0.9-seed0 |" in result.stdout  # the printed CSR table
    baseline = next(line for line in result.stdout.splitlines() if "--format onnx" in line)
    assert baseline.endswith("--no-shrink")  # the dense network at full shape, not shrunk
    assert not (tmp_path / "sweep" / "cells").exists()  # --keep-table: what bench/results keeps


def test_gate_kernels_times_eager_against_compiled_at_every_size():
    """bench/gate_kernels.py compiles the kernels and times both at each size it is given."""
    done = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "gate_kernels.py"), "--rounds", "1", "--threads", "1",
         "--sizes", "1000,20000"],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| backward |")
            or line.startswith("| penalty |")]  # fmt: skip
    assert [row.split("|")[2].strip() for row in rows] == ["1,000", "20,000"] * 2


def test_sparser_at_accuracy_interpolates_in_log_kept_fraction(tmp_path):
    """bench/sparser_at_accuracy.py on two written result files: a gate curve through 10% kept
    (90.0%) and 5% kept (89.0%) crosses a reference of 89.5% halfway in log: at √(10 · 5) %.
    Every cell's two seeds agree, so the bootstrap interval over seeds is that one point."""

    def rows(label, kept, val, test):
        return [{"label": f"{label} s{seed}", "val_accuracy": val, "test_accuracy": test,
                 "params_kept": kept, "params_total": 1000, "macs_kept": kept, "macs_total": 1000}
                for seed in (0, 1)]  # fmt: skip

    gates = tmp_path / "gates.json"
    gates.write_text(json.dumps(rows("defaults 0.9", 100, 0.90, 0.90)
                                + rows("defaults 0.95", 50, 0.89, 0.91)))  # fmt: skip
    reference = tmp_path / "ep.json"
    reference.write_text(json.dumps(rows("ep 0.9", 100, 0.895, 0.905)))

    def sparser() -> subprocess.CompletedProcess:
        done = subprocess.run(
            [PYTHON, str(ROOT / "bench" / "sparser_at_accuracy.py"), "--gates", str(gates),
             "--reference", str(reference)],
            capture_output=True, text=True, env=cli_env(), timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    result = sparser()
    lines = [line for line in result.stdout.splitlines() if line.startswith("| val | 89.50%")]
    ratio = f"{0.1 / 0.005**0.5:.2f}x"
    assert len(lines) == 2 and f"| {100 * 0.005**0.5:.2f}% | {ratio} |" in lines[0]
    assert f"| {ratio}–{ratio} |" in lines[0]  # seeds alike: every bootstrap draw is the same
    # on test the sparsest cell already beats the reference: a lower bound only
    assert "| test | 90.50% | weights | 10.00% | 5.00% | ≥ 2.00x |" in result.stdout
    # runs without a validation split (the protocol: all training images) give test only
    for path in (gates, reference):
        path.write_text(json.dumps([{**r, "val_accuracy": None} for r in json.loads(
            path.read_text())]))  # fmt: skip
    result = sparser()
    assert "| val |" not in result.stdout
    assert "| test | 90.50% | weights | 10.00% | 5.00% | ≥ 2.00x |" in result.stdout
