"""Interrupted and faulty runs lose nothing: SIGKILL at random points, a full disk, a read-only
directory, NaN in the loss, two searches on one directory; and no pickle on any load path."""

from __future__ import annotations

import ast
import contextlib
import json
import random
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import PYTHON, ROOT, cli_env, run_cli

from slt_deploy.checkpoint import load_checkpoint
from slt_deploy.errors import SltError
from slt_deploy.search import trainer as trainer_module
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import resolve
from slt_deploy.search.loop import search

ARGS = ("search", "--data", "digits", "--epochs", "6", "--target-sparsity", "0.8", "--seed",
        "11", "--quiet")  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("ref") / "run"
    done = run_cli(*ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return (out / "ticket.safetensors").read_bytes()


@pytest.fixture(scope="module")
def epoch_seconds(reference, tmp_path_factory) -> float:
    out = tmp_path_factory.mktemp("timing") / "run"
    search(SearchConfig(data="digits", epochs=2, target_sparsity=0.8), out, progress=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return records[1]["seconds"] - records[0]["seconds"]


def _start(out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "slt_deploy", *ARGS, "--out", str(out), *extra],
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **kwargs)  # fmt: skip


def _epochs_done(out: Path) -> int:
    with contextlib.suppress(OSError):
        return len((out / "metrics.jsonl").read_text().splitlines())
    return 0


def _kill_after_epochs(out: Path, epochs: int) -> None:
    proc = _start(out)
    deadline = time.time() + 120
    while proc.poll() is None and _epochs_done(out) < epochs and time.time() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert not (out / "ticket.safetensors").exists(), "finished before it could be killed"


def _wait_until_locked(proc: subprocess.Popen, out: Path) -> None:
    """Until the search holds its run directory (past interpreter start and data loading)."""
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        with contextlib.suppress(OSError):
            if (out / ".lock").read_text().strip() == str(proc.pid):
                return
        time.sleep(0.005)


def test_sigkill_at_random_points_then_resume_gives_the_same_ticket(
    reference, epoch_seconds, tmp_path
):
    """Killed at random moments (during start-up, before the first checkpoint, mid-epoch,
    mid-write), resumed each time with the same command: the final ticket is byte-identical."""
    out, rng, kills, most = tmp_path / "run", random.Random(2026), 0, 6
    extra: tuple[str, ...] = ()
    while True:
        proc = _start(out, *extra)
        if kills == 0:
            delay = rng.uniform(0.05, 1.0)  # most likely still importing
        else:
            _wait_until_locked(proc, out)
            delay = rng.uniform(0.0, 2.0 * epoch_seconds)
        try:
            proc.wait(timeout=delay if kills < most else 300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
            extra = ("--resume",) if out.exists() else ()  # what a user would type next
            continue
        assert proc.returncode == 0, proc.stderr.read()
        break
    assert kills == most
    assert (out / "ticket.safetensors").read_bytes() == reference
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_resume_removes_the_temporary_file_a_killed_writer_left(reference, tmp_path):
    """SIGKILL mid-write leaves `.checkpoint.safetensors.*.tmp` (no cleanup runs); the next
    holder of the run directory's lock removes it and finishes the same ticket. (The random
    kill test above hits this only when a kill lands inside a write.)"""
    out = tmp_path / "run"
    _kill_after_epochs(out, 1)
    stale = out / ".checkpoint.safetensors.killed.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = out / "notes.txt"  # not ours to remove
    keep.write_text("kept")
    done = _start(out, "--resume")
    assert done.wait(timeout=300) == 0, done.stderr.read()
    assert not stale.exists() and keep.read_text() == "kept"
    assert (out / "ticket.safetensors").read_bytes() == reference


def test_second_search_on_the_same_directory_refuses(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [PYTHON, "-m", "slt_deploy", "search", "--data", "digits", "--epochs", "500",
         "--out", str(out), "--quiet"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while _epochs_done(out) < 1 and time.time() < deadline:
            time.sleep(0.01)
        for extra in (("--resume",), ("--force",)):
            second = run_cli("search", "--data", "digits", "--epochs", "500", "--out", str(out),
                             *extra)  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert f"being written by another search (pid {first.pid})" in second.stderr
        assert first.poll() is None and (out / "checkpoint.safetensors").is_file()
    finally:
        first.kill()
        first.wait()
    # the kernel dropped the dead holder's lock: resuming works at once
    resumed = run_cli("search", "--data", "digits", "--epochs", "500", "--out", str(out),
                      "--resume", "--max-steps", "1", "--quiet")  # fmt: skip
    assert resumed.returncode == 2 and "settings differ" in resumed.stderr  # max_steps differs
    assert "another search" not in resumed.stderr


def _fsize_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _assert_failed_cleanly(proc_or_done, out: Path, before: bytes, reason: str) -> None:
    stderr = proc_or_done.stderr if isinstance(proc_or_done.stderr, str) else ""
    assert proc_or_done.returncode == 2, stderr
    assert reason in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert (out / "checkpoint.safetensors").read_bytes() == before  # the previous one, intact
    assert load_checkpoint(out / "checkpoint.safetensors")["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_file_size_limit_keeps_the_previous_checkpoint(reference, tmp_path):
    """RLIMIT_FSIZE (works for any user): the epoch-2 checkpoint, a few hundred bytes larger
    than epoch 1's, cannot be written; the epoch-1 checkpoint survives and resumes."""
    out = tmp_path / "run"
    _kill_after_epochs(out, 1)
    before = (out / "checkpoint.safetensors").read_bytes()
    done = subprocess.run([PYTHON, "-m", "slt_deploy", *ARGS, "--out", str(out), "--resume"],
                          env=cli_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=_fsize_limit(len(before) + 16))  # fmt: skip
    _assert_failed_cleanly(done, out, before, "File too large")
    again = run_cli(*ARGS, "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert (out / "ticket.safetensors").read_bytes() == reference


@contextlib.contextmanager
def _tmpfs(path: Path, size: int):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_keeps_the_previous_checkpoint(reference, tmp_path):
    """A real full file system: a tmpfs with room for the run but not a second checkpoint."""
    src = tmp_path / "run"
    _kill_after_epochs(src, 1)
    before = (src / "checkpoint.safetensors").read_bytes()
    used = sum(p.stat().st_size for p in src.iterdir())
    with _tmpfs(tmp_path / "small", used + len(before) // 2 + 8192) as disk:
        out = disk / "run"
        shutil.copytree(src, out)
        # fill the slack so the next checkpoint cannot fit beside the current one
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * max(0, free - len(before) // 2))
        done = run_cli(*ARGS, "--out", str(out), "--resume")
        _assert_failed_cleanly(done, out, before, "No space left on device")
        shutil.copytree(out, tmp_path / "rescued")
    again = run_cli(*ARGS, "--out", str(tmp_path / "rescued"), "--resume")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "rescued" / "ticket.safetensors").read_bytes() == reference


def test_read_only_output_directory(tmp_path):
    src = tmp_path / "run"
    _kill_after_epochs(src, 1)
    before = (src / "checkpoint.safetensors").read_bytes()
    with _tmpfs(tmp_path / "ro", 1 << 20) as disk:
        shutil.copytree(src, disk / "run")
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if remount.returncode:
            pytest.skip("cannot remount read-only here")
        done = run_cli(*ARGS, "--out", str(disk / "run"), "--resume")
        _assert_failed_cleanly(done, disk / "run", before, "Read-only file system")
        fresh = run_cli(*ARGS, "--out", str(disk / "new"))
        assert fresh.returncode == 2 and "Read-only file system" in fresh.stderr
        assert run_cli(*ARGS, "--out", str(src), "--resume").returncode == 0
        exported = run_cli("export", str(src), "--format", "slt", "--out", str(disk / "m.slt"))
        assert exported.returncode == 2 and "Read-only file system" in exported.stderr


def test_nan_loss_stops_with_a_clear_message_in_a_real_run(tmp_path):
    done = run_cli("search", "--data", "digits", "--method", "dense", "--lr", "1e30",
                   "--epochs", "2", "--out", str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "non-finite loss (NaN or Inf)" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "ticket.safetensors").exists()


class _NanAtSteps:
    """A fault injector at the loss: NaN on the given calls, the real loss otherwise."""

    def __init__(self, calls: set[int]) -> None:
        self.calls, self.count, self.real = calls, 0, torch.nn.functional.cross_entropy

    def __call__(self, *args, **kwargs):
        self.count += 1
        loss = self.real(*args, **kwargs)
        return loss * float("nan") if self.count in self.calls else loss


def test_nan_stop_keeps_the_last_good_checkpoint_and_resume_recovers(monkeypatch, tmp_path):
    config = SearchConfig(data="digits", epochs=3, target_sparsity=0.8, seed=4)
    search(config, tmp_path / "ref", progress=False)
    steps_per_epoch = json.loads((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[0])
    first_epoch_steps = steps_per_epoch["step"]
    injector = _NanAtSteps({first_epoch_steps + 3})
    monkeypatch.setattr(trainer_module.F, "cross_entropy", injector)
    with pytest.raises(SltError, match=r"non-finite loss .* epoch 2: stopped; the checkpoint "
                                       r"of epoch 1 .* is kept"):  # fmt: skip
        search(config, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")["epoch"] == 1
    monkeypatch.setattr(trainer_module.F, "cross_entropy", injector.real)
    search(config, tmp_path / "run", resume=True, progress=False)
    ticket = (tmp_path / "run" / "ticket.safetensors").read_bytes()
    assert ticket == (tmp_path / "ref" / "ticket.safetensors").read_bytes()


def test_nan_skip_batch_skips_and_counts(monkeypatch, tmp_path):
    injector = _NanAtSteps({2, 9})
    monkeypatch.setattr(trainer_module.F, "cross_entropy", injector)
    config = SearchConfig(data="digits", epochs=2, target_sparsity=0.8, on_nan="skip-batch")
    summary = search(config, tmp_path / "run", progress=False)
    assert summary["skipped_batches"] == 2 and 0.0 < summary["test_accuracy"] <= 1.0


def test_gradient_check_is_exact_for_nan_inf_and_huge_finite_values():
    """The step checks gradients by their sums (cheap); a non-finite sum is re-checked element
    by element, so finite values whose sum overflows are not mistaken for a NaN."""
    from slt_deploy.data import DataSpec
    from slt_deploy.search.trainer import build_trainer

    spec = DataSpec("digits", (1, 8, 8), 10, (0.0,), (1.0,))
    config = resolve(SearchConfig(data="digits", target_sparsity=0.8), 10)
    trainer = build_trainer(config, spec, 10, torch.device("cpu"))
    params = [p for p in trainer.trainable if p.numel() > 1]  # gates (not the temperature)
    loss = torch.tensor(1.0)
    for p in params:
        p.grad = torch.zeros_like(p)
    assert trainer._finite_flags(loss) == (True, True)
    params[0].grad.fill_(3e38)  # every value finite, the sum overflows to inf
    assert trainer._finite_flags(loss) == (True, True)
    for bad in (float("nan"), float("inf"), -float("inf")):
        params[1].grad.view(-1)[3] = bad
        assert trainer._finite_flags(loss) == (True, False)
        params[1].grad.view(-1)[3] = 0.0
    assert trainer._finite_flags(torch.tensor(float("nan"))) == (False, True)


def _loads_without_weights_only(node: ast.Call) -> str | None:
    name = ast.unparse(node.func)
    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
    if name.endswith("torch.load") and keywords.get("weights_only") != "True":
        return "torch.load without weights_only=True"
    if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load"):
        return name
    if name.endswith("np.load") and keywords.get("allow_pickle") not in (None, "False"):
        return "np.load(allow_pickle=...)"
    if name.endswith("Unpickler") and name != "_ArraysOnlyUnpickler":
        return "an unrestricted Unpickler"
    return None


def test_no_pickle_on_any_load_path():
    """Every call site in the package: no unrestricted unpickling anywhere. CIFAR's python
    batches are pickles by design; they go through an Unpickler that resolves no global but
    numpy's array rebuilders (data/sources.py, tested in test_data.py)."""
    found = []
    for path in sorted((ROOT / "slt_deploy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and (why := _loads_without_weights_only(node)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {why}")
    assert not found, "\n".join(found)
    source = (ROOT / "slt_deploy" / "data" / "sources.py").read_text()
    assert "class _ArraysOnlyUnpickler(pickle.Unpickler)" in source and "def find_class" in source


def test_the_pickle_scanner_can_fail():
    bad = ast.parse("torch.load(f)\npickle.loads(b)\nnp.load(f, allow_pickle=True)\n"
                    "torch.load(f, weights_only=True)")  # fmt: skip
    hits = [_loads_without_weights_only(n) for n in ast.walk(bad) if isinstance(n, ast.Call)]
    assert sum(h is not None for h in hits) == 3


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_exit_130_and_resumable(tmp_path):
    # 30 epochs, so that the run is still going when epoch 1 is seen, however loaded the machine
    args = [a if a != "6" else "30" for a in ARGS]
    reference = run_cli(*args, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "run"
    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; something earlier
    # in a full test session leaves it ignored in pytest, and children inherit that (Python then
    # installs no KeyboardInterrupt handler), so the child gets the default back explicitly
    proc = subprocess.Popen([PYTHON, "-m", "slt_deploy", *args, "--out", str(out)],
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.time() + 120
    while proc.poll() is None and _epochs_done(out) < 1 and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "interrupted; a search continues from its last checkpoint with --resume"
    ]
    assert load_checkpoint(out / "checkpoint.safetensors")["epoch"] >= 1
    again = run_cli(*args, "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    expected = (tmp_path / "reference" / "ticket.safetensors").read_bytes()
    assert (out / "ticket.safetensors").read_bytes() == expected
