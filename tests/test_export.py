"""Export: every format against PyTorch on real inputs, byte-for-byte determinism, eval."""

import json
import lzma

import numpy as np
import onnx
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file, save_file

from slt_deploy.errors import SltError
from slt_deploy.evaluate import evaluate_artifact
from slt_deploy.export import ExportRequest, export, load_deployable
from slt_deploy.export.csr_format import load as load_csr
from slt_deploy.export.onnx_format import session
from slt_deploy.export.slt_format import read as read_slt
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "lenet"
    summary = search(
        SearchConfig(data="digits", epochs=20, target_sparsity=0.9, seed=2), out, progress=False
    )
    return out, summary


@pytest.fixture(scope="module")
def conv_ticket(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "conv"
    config = SearchConfig(
        model="conv2", model_kwargs={"width": 0.25}, data="digits", epochs=3, target_sparsity=0.5
    )
    return out, search(config, out, progress=False)


_cli = run_cli


@pytest.mark.parametrize(
    "fmt,name", [("onnx", "m.onnx"), ("csr", "m.csr.safetensors"), ("slt", "m.slt")]
)
def test_each_format_matches_pytorch_and_the_searched_accuracy(ticket, tmp_path, fmt, name):
    run, summary = ticket
    out = tmp_path / name
    report = export(ExportRequest(run, fmt, out))
    assert report["parity"]["inputs"] == "digits test split"
    assert report["parity"]["max_abs_diff"] <= 1e-4
    # the searched mask less the weights on dead paths (masking/paths.py)
    assert report["weights_kept"] + report["dead_path_weights_removed"] == summary["params_kept"]
    assert json.loads((tmp_path / f"{name}.json").read_text())["sha256"] == report["sha256"]
    result = evaluate_artifact(out, "digits")
    assert result["accuracy"] == summary["test_accuracy"]  # same predictions, every runtime
    assert result["samples"] == 360


def test_eval_runs_through_every_cpu_bench_backend_with_the_same_predictions(ticket, tmp_path):
    """eval classifies with bench's runners: the .slt and the ticket under each CPU back-end
    (ORT on the ONNX built in memory, dense torch, torch CSR) give the searched accuracy."""
    run, summary = ticket
    slt = tmp_path / "m.slt"
    export(ExportRequest(run, "slt", slt))
    for artifact in (slt, run):
        for backend in ("torch", "torch-sparse", "ort"):
            result = evaluate_artifact(artifact, "digits", backend=backend, threads=1)
            assert (result["backend"], result["device"]) == (backend, "cpu")
            assert result["accuracy"] == summary["test_accuracy"], (artifact, backend)
    assert evaluate_artifact(run, "digits")["backend"] == "torch"


def test_onnx_graph_is_checked_named_and_batch_dynamic(ticket, tmp_path):
    run, _ = ticket
    out = tmp_path / "m.onnx"
    export(ExportRequest(run, "onnx", out))
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    sess = session(out)
    for batch in (1, 7):
        logits = sess.run(["logits"], {"input": np.zeros((batch, 1, 8, 8), np.float32)})[0]
        assert logits.shape == (batch, 10)


def test_exports_are_byte_for_byte_reproducible(ticket, tmp_path):
    run, _ = ticket
    for fmt, name in (("onnx", "m.onnx"), ("csr", "m.csr.safetensors"), ("slt", "m.slt")):
        export(ExportRequest(run, fmt, tmp_path / "a" / name))
        export(ExportRequest(run, fmt, tmp_path / "b" / name))
        for suffix in ("", ".json"):
            a = (tmp_path / "a" / (name + suffix)).read_bytes()
            assert a == (tmp_path / "b" / (name + suffix)).read_bytes(), name + suffix


def test_slt_rebuilds_the_same_onnx_bytes_and_is_tiny(ticket, tmp_path):
    run, _ = ticket
    direct = export(ExportRequest(run, "onnx", tmp_path / "direct.onnx"))
    slt = export(ExportRequest(run, "slt", tmp_path / "t.slt"))
    again = export(ExportRequest(tmp_path / "t.slt", "onnx", tmp_path / "again.onnx"))
    assert again["sha256"] == direct["sha256"]
    assert slt["bytes"] * 20 < direct["bytes"]
    assert slt["parity"]["max_abs_diff"] == 0.0


def test_exact_sparsity_and_threshold_override(ticket):
    run, _ = ticket
    net = load_deployable(run, sparsity=0.95)
    total, kept = net.totals()
    # exactly the top 5% of gates are chosen; those on dead paths then leave the mask
    removed = sum(net.source["dead_path_weights_removed"].values())
    assert removed > 0 and kept + removed == round(0.05 * total)
    stricter = load_deployable(run, threshold=0.9)
    assert stricter.totals()[1] <= load_deployable(run).totals()[1]
    with pytest.raises(SltError):
        load_deployable(run, threshold=0.5, sparsity=0.5)


def test_conv_model_folds_batchnorm_and_keeps_predictions(conv_ticket, tmp_path):
    run, summary = conv_ticket
    onnx_report = export(ExportRequest(run, "onnx", tmp_path / "c.onnx"))
    ops = {node.op_type for node in onnx.load(str(tmp_path / "c.onnx")).graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert onnx_report["parity"]["max_abs_diff"] <= 1e-4
    export(ExportRequest(run, "slt", tmp_path / "c.slt"))
    rebuilt = export(ExportRequest(tmp_path / "c.slt", "onnx", tmp_path / "rebuilt.onnx"))
    assert rebuilt["sha256"] == onnx_report["sha256"]  # conv + BN: same bytes from seed + mask
    export(ExportRequest(run, "csr", tmp_path / "c.csr.safetensors"))
    for artifact in (tmp_path / "c.onnx", tmp_path / "c.csr.safetensors"):
        assert evaluate_artifact(artifact, "digits")["accuracy"] == summary["test_accuracy"]


def test_dense_runs_cannot_be_exported_as_tickets(tmp_path):
    run = tmp_path / "dense"
    search(SearchConfig(data="digits", method="dense", epochs=1, max_steps=2), run, progress=False)
    with pytest.raises(SltError, match="no mask"):
        export(ExportRequest(run, "onnx", tmp_path / "d.onnx"))


def test_hostile_csr_indices_are_refused_not_executed(ticket, tmp_path):
    run, _ = ticket
    good = tmp_path / "m.csr.safetensors"
    export(ExportRequest(run, "csr", good))
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(good))
    key = next(k for k in tensors if k.endswith(".col_indices"))
    tensors[key] = tensors[key].clone()
    tensors[key][0] = 10**6  # out of range: a kernel would read outside the buffer
    bad = tmp_path / "bad.csr.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    with pytest.raises(SltError, match="does not match its SHA-256"):
        load_csr(bad)
    # the seal is integrity, not authenticity: a re-sealed hostile file meets the index checks
    from slt_deploy.headers import METADATA_KEY, seal

    save_file(tensors, str(bad), metadata=seal(json.loads(metadata[METADATA_KEY]), tensors))
    with pytest.raises(SltError, match="malformed CSR"):
        load_csr(bad)


def test_corrupt_and_foreign_artifacts_exit_2_with_one_line(ticket, tmp_path):
    run, _ = ticket
    slt = tmp_path / "m.slt"
    export(ExportRequest(run, "slt", slt))
    truncated = tmp_path / "cut.slt"
    truncated.write_bytes(slt.read_bytes()[:-40])
    foreign = tmp_path / "other.slt"
    foreign.write_bytes(lzma.compress(b"{}" * 10))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx" * 20)
    engine = tmp_path / "m.engine"  # an engine runs on its GPU: eval says so on the CPU
    engine.write_bytes(b"\x00" * 64)
    unknown = tmp_path / "m.bin"
    unknown.write_bytes(b"\x00" * 64)
    stderr = {}
    no_gpu = "--device", "cuda"  # on a machine without one (CI): one line, not a traceback
    for path, *options in (
        (truncated,),
        (foreign,),
        (garbage,),
        (engine,),
        (unknown,),
        (slt, *no_gpu),
        (slt, "--backend", "trt"),
    ):
        result = _cli("eval", str(path), "--data", "digits", *options)
        assert result.returncode == 2, (path, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        stderr[path, *options] = result.stderr
    assert "--device cuda" in stderr[engine,] and "unknown artifact type" in stderr[unknown,]
    assert "cannot run m.slt" in stderr[slt, "--backend", "trt"]
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in stderr[(slt, *no_gpu)]
    with pytest.raises(SltError):
        read_slt(truncated)


def test_cli_export_and_eval(ticket, tmp_path):
    run, summary = ticket
    out = tmp_path / "cli.onnx"
    done = _cli("export", str(run), "--format", "onnx", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli.onnx.json").is_file()
    again = _cli("export", str(run), "--format", "onnx", "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    evaluated = _cli("eval", str(out), "--data", "digits", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["accuracy"] == summary["test_accuracy"] and result["samples"] == 360


def test_slt_rebuild_equals_ticket_model(ticket, tmp_path):
    run, _ = ticket
    export(ExportRequest(run, "slt", tmp_path / "t.slt"))
    rebuilt, original = read_slt(tmp_path / "t.slt"), load_deployable(run)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt.model(x), original.model(x))
