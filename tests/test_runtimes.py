"""Which ONNX Runtime build is importable: exactly one, or `slt-deploy doctor` says why not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slt_deploy.errors import SltError
from slt_deploy.runtimes import import_onnxruntime, onnxruntime_builds


def _doctor(env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slt_deploy", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_exactly_one_onnxruntime_build_is_installed():
    builds = onnxruntime_builds()
    assert len(builds) == 1, builds
    result = _doctor()
    assert result.returncode == 0, result.stderr
    assert builds[0] in result.stdout and "CPUExecutionProvider" in result.stdout


def test_doctor_refuses_a_second_build_in_one_line(tmp_path):
    """What `pip install onnxruntime-gpu` beside `onnxruntime` leaves: a second dist-info for
    the same package (only its metadata; the files it would overwrite are not needed)."""
    info = tmp_path / "onnxruntime_gpu-1.18.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.18.0\n"
    )
    result = _doctor({"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "2 ONNX Runtime builds" in line and "onnxruntime-gpu==1.18.0" in line
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in line


def test_missing_onnxruntime_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what Python does when it is absent
    with pytest.raises(SltError, match=r"pip install 'slt-deploy\[cpu\]'"):
        import_onnxruntime()
