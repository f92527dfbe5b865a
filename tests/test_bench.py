"""Bench: real runners on real artifacts, interleaved timing, memory in a child process,
the record schema, ratios, and clear refusals."""

import csv
import json
import time

import numpy as np
import pytest
import torch
from conftest import run_cli

from slt_deploy.bench.artifacts import inspect
from slt_deploy.bench.engine_cache import cache_key, lookup, store
from slt_deploy.bench.memory import probe_in_child
from slt_deploy.bench.run import BenchRequest, add_ratios, bench
from slt_deploy.bench.runners import Runner, RunnerOptions, runner_for
from slt_deploy.bench.timing import TimingPolicy, latency_summary, measure_interleaved
from slt_deploy.errors import SltError
from slt_deploy.export import ExportRequest, export
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search

QUICK = ("--warmup-ms", "10", "--min-iterations", "5", "--min-seconds", "0.05")
FAST = TimingPolicy(warmup_seconds=0.01, min_iterations=5, min_seconds=0.05)
REQUIRED = {
    "artifact", "backend", "device", "batch_size", "latency_ms", "throughput_per_s",
    "peak_memory_bytes", "load_seconds", "artifact_bytes", "machine",
}  # fmt: skip


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    run = root / "run"
    search(SearchConfig(data="digits", epochs=3, target_sparsity=0.8, seed=1), run, progress=False)
    export(ExportRequest(run, "onnx", root / "m.onnx"))
    export(ExportRequest(run, "csr", root / "m.csr.safetensors"))
    export(ExportRequest(run, "slt", root / "m.slt"))
    return root


def test_cli_bench_table_json_csv(artifacts, tmp_path):
    out_json, out_csv = tmp_path / "b.json", tmp_path / "b.csv"
    args = [str(artifacts / n) for n in ("run", "m.onnx", "m.csr.safetensors", "m.slt")]
    done = run_cli("bench", *args, "--batch-size", "1,8", *QUICK, "--threads", "1",
                   "--json", str(out_json), "--csv", str(out_csv))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "p50 ×" in done.stdout and "m.csr.safetensors" in done.stdout
    records = json.loads(out_json.read_text())
    assert len(records) == 8
    for record in records:
        assert set(record) >= REQUIRED
        assert set(record["latency_ms"]) >= {"mean", "p50", "p90", "p99"}
        lat = record["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert record["iterations"] >= 5 and record["threads"] == 1
        assert record["throughput_per_s"] == pytest.approx(record["batch_size"] * 1e3 / lat["mean"])
        assert record["peak_memory_bytes"] > 0
        assert {"torch", "onnxruntime"} <= set(record["machine"]["libraries"])
        assert record["baseline"] == {"artifact": args[0], "backend": "torch"}
    backends = [r["backend"] for r in records[:4]]
    assert backends == ["torch", "ort", "torch-sparse", "torch"]  # defaults by artifact type
    assert records[0]["ratio"]["latency_p50"] == 1.0 and records[4]["ratio"]["throughput"] == 1.0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 8 and rows[2]["backend"] == "torch-sparse"
    assert float(rows[1]["ratio.artifact_bytes"]) == pytest.approx(
        records[1]["ratio"]["artifact_bytes"]
    )


def test_every_backend_runs_a_ticket_with_the_same_outputs(artifacts):
    """torch, torch-sparse and ort on one ticket: the runners really execute the network."""
    artifact = inspect(artifacts / "run")
    outputs = {}
    for backend in ("torch", "torch-sparse", "ort"):
        with runner_for(artifact, backend, RunnerOptions(threads=1)) as runner:
            outputs[backend] = runner.logits(runner.feed(4))
    np.testing.assert_allclose(outputs["torch-sparse"], outputs["torch"], atol=1e-4)
    np.testing.assert_allclose(outputs["ort"], outputs["torch"], atol=1e-4)


def _weights_held(runner) -> int:
    """Weight and bias elements of the network a runner executes (CSR layers by their shape)."""
    from slt_deploy.sparse import _SparseLayer

    if hasattr(runner, "session"):
        import onnx

        model = onnx.load(str(runner.artifact.path))
        floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
        return sum(int(np.prod(t.dims)) for t in floats)
    count = 0
    for module in runner.model.modules():
        if isinstance(module, _SparseLayer):
            count += module.weight.shape.numel() + (
                module.bias.numel() if module.bias is not None else 0
            )
        else:
            count += sum(p.numel() for p in module.parameters(recurse=False))
    return count


@pytest.mark.parametrize(
    "config",
    [
        SearchConfig(
            model="conv2",
            model_kwargs={"width": 0.25},
            data="digits",
            granularity="channel",
            target_sparsity=0.5,
            epochs=3,
        ),
        # unstructured, with hidden units its dead paths leave empty: shrunk too
        SearchConfig(data="digits", method="edge-popup", target_sparsity=0.97, epochs=3),
    ],
    ids=["channel", "unstructured"],
)
def test_every_backend_runs_the_shrunk_network_a_ticket_onnx_holds(config, tmp_path):
    """A shrunk ticket's ONNX: torch and torch-sparse must run the shrunk network too, not the
    full-size one rebuilt from the ticket (same outputs either way, so count weights)."""
    run = tmp_path / "run"
    search(config, run, progress=False)
    report = export(ExportRequest(run, "onnx", tmp_path / "c.onnx"))
    assert report["shrunk"]["applied"] and report["shrunk"]["params_ratio"] < 0.9
    artifact = inspect(tmp_path / "c.onnx")
    outputs, held = {}, {}
    for backend in ("ort", "torch", "torch-sparse"):
        with runner_for(artifact, backend, RunnerOptions(threads=1)) as runner:
            outputs[backend] = runner.logits(runner.feed(8))
            held[backend] = _weights_held(runner)
    assert held["torch"] == held["torch-sparse"] == held["ort"]
    for backend in ("torch", "torch-sparse"):
        np.testing.assert_allclose(outputs[backend], outputs["ort"], atol=1e-4, rtol=1e-4)


def test_torch_backend_runs_an_onnx_export_through_its_recorded_source(artifacts):
    request = BenchRequest(
        artifacts=(str(artifacts / "m.onnx"),),
        backends=("ort", "torch", "trt"),
        options=RunnerOptions(threads=1),
        policy=FAST,
        memory=False,
    )
    records = bench(request)
    assert [r["backend"] for r in records] == ["ort", "torch"]
    assert records[0]["skipped_pairs"] == ["trt does not run on cpu (m.onnx)"]


class _Sleeper(Runner):
    """A runner whose cost is known, to check the loop itself (not a back-end)."""

    backend = "sleep"
    kinds = ("onnx",)

    def _load(self) -> None:
        self.input_shape = (1,)

    def prepare(self, x) -> float:
        return 0.002 * len(x)

    def infer(self, feed: float) -> None:
        time.sleep(feed)


def test_interleaved_loop_meets_both_minimums_and_keeps_outliers(artifacts):
    policy = TimingPolicy(
        warmup_seconds=0.01, min_iterations=20, min_seconds=0.1, chunk_seconds=0.01
    )
    slow, fast = (_Sleeper(inspect(artifacts / "m.onnx"), RunnerOptions()) for _ in range(2))
    slow.activate(), fast.activate()
    samples = measure_interleaved([(slow, slow.feed(5)), (fast, fast.feed(1))], policy)
    for times in samples:
        assert len(times) >= 20 and times.sum() >= 0.1
    assert np.median(samples[0]) > 3 * np.median(samples[1])
    summary = latency_summary(np.array([0.001] * 98 + [0.1, 0.2]))
    assert summary["max"] == pytest.approx(200.0) and summary["p99"] > 100  # nothing trimmed


def test_ratios_are_against_the_first_pair_at_each_batch():
    def rec(artifact, batch, p50, mem):
        return {"artifact": artifact, "backend": "ort", "batch_size": batch,
                "latency_ms": {"p50": p50, "mean": p50}, "throughput_per_s": batch / p50,
                "peak_memory_bytes": mem, "artifact_bytes": 100}  # fmt: skip

    records = [
        rec("a", 1, 2.0, 10),
        rec("b", 1, 1.0, None),
        rec("a", 8, 4.0, 10),
        rec("b", 8, 8.0, 5),
    ]
    add_ratios(records)
    assert records[1]["ratio"]["latency_p50"] == 0.5 and records[1]["ratio"]["throughput"] == 2.0
    assert records[1]["ratio"]["peak_memory"] is None
    assert records[3]["ratio"]["latency_p50"] == 2.0 and records[3]["ratio"]["peak_memory"] == 0.5


def test_memory_probe_in_a_child_process(artifacts):
    options = {"device": "cpu", "threads": 1}
    dense = probe_in_child(str(artifacts / "run"), "torch", options, 1)
    assert dense["host_rss_peak_delta_bytes"] > 0, dense
    broken = probe_in_child(str(artifacts / "m.onnx"), "trt", options, 1)
    assert broken["error"].startswith("memory probe failed: error:")


def test_engine_cache_key_and_store(tmp_path):
    device = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    key = cache_key(b"onnx", device, {"fp16": "True"})
    assert key == cache_key(b"onnx", dict(device), {"fp16": "True"})
    assert key != cache_key(b"onnx2", device, {"fp16": "True"})
    assert key != cache_key(b"onnx", {**device, "tensorrt": "10.4.0"}, {"fp16": "True"})
    assert key != cache_key(b"onnx", device, {"fp16": "False"})
    assert lookup(tmp_path, key) is None
    store(tmp_path, key, b"engine-bytes", {"gpu": "Orin"})
    assert lookup(tmp_path, key) == b"engine-bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.engine", f"{key}.json"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["m.csr.safetensors", "--backend", "trt"], "no back-end given can run"),
        (["m.onnx", "--backend", "trt"], "trt does not run on cpu"),
        (["m.onnx", "--backend", "tflite"], "unknown bench back-end"),
        (["m.onnx", "--device", "jetson"], "not a Jetson"),
        (["m.onnx", "--batch-size", "1,x"], "--batch-size takes integers"),
        (["m.onnx", "--batch-size", "0"], "positive integers"),
        (["missing.onnx"], "does not exist"),
        (["m.onnx.json"], "unknown artifact type"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(artifacts, args, message):
    args = [str(artifacts / args[0]), *args[1:]]
    done = run_cli("bench", *args, *QUICK, "--no-memory")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cuda_without_a_gpu_is_refused(artifacts):
    done = run_cli("bench", str(artifacts / "m.onnx"), "--device", "cuda", *QUICK, "--no-memory")
    assert done.returncode == 2 and "error:" in done.stderr
    with pytest.raises(SltError, match="trt back-end runs on cuda"):
        runner_for(inspect(artifacts / "m.onnx"), "trt", RunnerOptions())


def test_a_request_round_trips_through_json_and_runs_from_a_file(artifacts, tmp_path):
    """What `bench --remote` sends: every field of the request survives, and `bench --request`
    runs it (the remote side), so an option added later cannot be dropped on the way."""
    request = BenchRequest(
        (str(artifacts / "m.onnx"),),
        backends=("ort",),
        batch_sizes=(1, 4),
        options=RunnerOptions(threads=1, ort_spinning=False),
        policy=TimingPolicy(0.01, 5, 0.05),
        memory=False,
        ort_spinning=False,
    )
    assert BenchRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    sent = tmp_path / "request.json"
    sent.write_text(json.dumps(request.to_dict()))
    done = run_cli("bench", "--request", str(sent), "--quiet", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(r["backend"], r["batch_size"]) for r in rows] == [("ort", 1), ("ort", 4)]
    sent.write_text(json.dumps({**request.to_dict(), "warp_speed": True}))
    done = run_cli("bench", "--request", str(sent))
    assert done.returncode == 2 and "not a bench request" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
