"""Hostile files: truncated, bit-flipped and oversized variants of real artifacts, and foreign
files (a pickle whose payload would create a file, a zip, random bytes), fed to every command
that reads them. Each ends with exit code 2 and one line on stderr: never a traceback, never the
payload's side effect. Sealed formats (ticket, checkpoint, CSR, .slt) refuse every variant;
ONNX and TOML, which users also write by hand, may be still-valid files (then exit 0).

The cases run in-process (click's test runner: the same code path as the console script, minus
the interpreter start) so that hundreds fit in the test budget; a few run as real processes.
SLT_FUZZ_EXAMPLES sets the number of cases, SLT_FUZZ_REPORT a JSON file for their tally
(bench/fuzz_artifacts.py runs many more and prints it).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slt_deploy.cli import cli
from slt_deploy.export import ExportRequest, export
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search

EXAMPLES = int(os.environ.get("SLT_FUZZ_EXAMPLES", "300"))
SEALED = {"ticket", "checkpoint", "csr", "slt"}
BASE = dict(data="digits", model="fc", model_kwargs={"width": 16, "depth": 1}, epochs=2,
            target_sparsity=0.5, seed=3)  # fmt: skip
SEARCH_ARGS = ("--data", "digits", "--model", "fc", "--width", "16", "--depth", "1", "--epochs",
               "2", "--target-sparsity", "0.5", "--seed", "3", "--quiet")  # fmt: skip
BENCH_ARGS = ("--warmup-ms", "0", "--min-iterations", "2", "--min-seconds", "0.001",
              "--no-memory", "--quiet")  # fmt: skip
TALLY: Counter = Counter()


class _Payload:
    """Unpickling this would run `touch MARKER`: the side effect the tests look for."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x04K\x01.")
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    search(SearchConfig(**BASE), run, progress=False)
    for fmt, name in (("onnx", "m.onnx"), ("csr", "m.csr.safetensors"), ("slt", "m.slt")):
        export(ExportRequest(run, fmt, root / name))
    marker = root / "PAYLOAD_RAN"
    files = {
        "ticket": (run / "ticket.safetensors").read_bytes(),
        "checkpoint": (run / "checkpoint.safetensors").read_bytes(),
        "onnx": (root / "m.onnx").read_bytes(),
        "csr": (root / "m.csr.safetensors").read_bytes(),
        "slt": (root / "m.slt").read_bytes(),
        "recipe": (ROOT / "search" / "recipes" / "lenet-300-100-mnist.toml").read_bytes(),
    }
    foreign = {
        "pickle": pickle.dumps(_Payload(marker)),
        "zip": _zip_bytes(),
        "random": os.urandom(512),
        "empty": b"",
        "json": b'{"format": "slt-deploy/ticket", "version": 2}',
    }
    return _Quiet(root=root, run=run, files=files, foreign=foreign, marker=marker)


class _Quiet(dict):
    """Keeps hypothesis' report of a failing case short (it prints the test's arguments)."""

    def __repr__(self) -> str:
        return "<originals>"


def _place(kind: str, data: bytes, case: Path, originals) -> tuple[list[list[str]], Path]:
    """Write the variant where its commands read it; return those commands."""
    case.mkdir(parents=True)
    if kind in ("ticket", "checkpoint"):
        run = case / "run"
        shutil.copytree(originals["run"], run, ignore=shutil.ignore_patterns(".lock"))
        target = run / f"{kind}.safetensors"
        target.write_bytes(data)
        if kind == "ticket":
            out = str(case / "o.onnx")
            return [["info", str(run)],
                    ["export", str(target), "--format", "onnx", "--out", out]], target  # fmt: skip
        (run / "summary.json").unlink()
        return [["search", *SEARCH_ARGS, "--out", str(run), "--resume"]], target
    names = {"onnx": "v.onnx", "csr": "v.csr.safetensors", "slt": "v.slt", "recipe": "v.toml"}
    target = case / names[kind]
    target.write_bytes(data)
    if kind == "slt":
        return [["export", str(target), "--format", "onnx", "--out", str(case / "o.onnx")]], target
    if kind == "recipe":
        return [["search", "--recipe", str(target), "--max-steps", "1", "--subset", "64",
                 "--out", str(case / "r"), "--quiet"]], target  # fmt: skip
    return [["eval", str(target), "--data", "digits", "--subset", "64"],
            ["bench", str(target), *BENCH_ARGS]], target  # fmt: skip


@st.composite
def variants(draw):
    kind = draw(st.sampled_from(["ticket", "checkpoint", "csr", "slt", "onnx", "recipe"]))
    how = draw(st.sampled_from(["truncate", "flip", "oversize", "foreign"]))
    return kind, how, draw(st.integers(0, 2**31 - 1)), draw(st.binary(min_size=1, max_size=64))


def _mutate(original: bytes, how: str, n: int, junk: bytes, foreign: dict) -> tuple[bytes, str]:
    if how == "truncate":
        return original[: n % len(original)], how
    if how == "flip":
        bit = n % (8 * len(original))
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data), how
    if how == "oversize":
        if n % 2 and original[:8] != b"\xfd7zXZ\x00\x00\x00"[:8]:  # safetensors: a huge header
            return (2**62).to_bytes(8, "little") + original[8:], "oversize-header"
        return original + junk * (1 + n % 4096), how
    name = sorted(foreign)[n % len(foreign)]
    return foreign[name], f"foreign-{name}"


def _invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    exc = result.exception
    return result.exit_code, result.stderr, None if isinstance(exc, SystemExit) else exc


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(case=variants())
def _refuses_one_damaged_or_foreign_file(originals, tmp_path_factory, case):
    kind, how, n, junk = case
    data, label = _mutate(originals["files"][kind], how, n, junk, originals["foreign"])
    directory = tmp_path_factory.mktemp("case")
    commands, _ = _place(kind, data, directory / "c", originals)
    for args in commands:
        code, stderr, exc = _invoke(args)
        assert exc is None, f"{kind}/{label} {args[0]}: {type(exc).__name__}: {exc}"
        strict = kind in SEALED or (label.startswith("foreign") and kind != "recipe")
        allowed = {2} if strict else {0, 2}  # an empty TOML is a valid recipe
        assert code in allowed, f"{kind}/{label} {args[0]} exited {code}: {stderr}"
        if code == 2:
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert not originals["marker"].exists(), "the pickle payload ran"
        TALLY[(kind, label.split("-")[0], args[0], code)] += 1
    shutil.rmtree(directory, ignore_errors=True)


def test_every_command_refuses_damaged_and_foreign_files(originals, tmp_path_factory):
    """The property test, then the tally of what it tried, in one test: as two tests the tally
    depended on file order, and a random-order run (pytest-randomly) skipped it."""
    TALLY.clear()
    _refuses_one_damaged_or_foreign_file(originals, tmp_path_factory)
    by_kind = Counter()
    for (kind, _, _, _), count in TALLY.items():
        by_kind[kind] += count
    assert set(by_kind) == {"ticket", "checkpoint", "csr", "slt", "onnx", "recipe"}
    report = os.environ.get("SLT_FUZZ_REPORT")
    if report:
        rows = [{"kind": k, "mutation": m, "command": c, "exit": e, "cases": n}
                for (k, m, c, e), n in sorted(TALLY.items())]  # fmt: skip
        Path(report).write_text(json.dumps(rows, indent=1))


@pytest.mark.parametrize("kind", ["ticket", "checkpoint", "csr", "slt", "onnx"])
def test_pickle_payload_in_a_real_process(kind, originals, tmp_path):
    """The same refusal through the console entry point in its own interpreter."""
    commands, _ = _place(kind, originals["foreign"]["pickle"], tmp_path / "c", originals)
    for args in commands:
        done = run_cli(*args)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not originals["marker"].exists()
