"""Jetson boards: detection, capabilities and `tegrastats` sampling.

NVML and nvidia-smi do not exist on Jetson and memory is shared between CPU and GPU, so RAM,
GPU load and power come from tegrastats. Its format differs by board and release: Orin Nano/NX
and Xavier NX print `VDD_IN 5704mW/5704mW` (current/average), AGX Orin has no VDD_IN but
`VDD_GPU_SOC`, `VDD_CPU_CV`, `VIN_SYS_5V0`, AGX Xavier prints bare `GPU 463/463 CPU 618/618 ...`
and TX2 `VDD_IN 3140/3208` without units. Total module power is VDD_IN (or the Nano's
POM_5V_IN) where the board has it and the sum of the module's rails otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from slt_deploy.errors import SltError

RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
GPU_LOAD = re.compile(r"\bGR3D_FREQ (\d+)%")
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
NOT_RAILS = {"RAM", "SWAP", "IRAM"}
# Sparse tensor cores (2:4) arrived with Ampere: Orin has them, Xavier (Volta), TX2 and Nano
# (Maxwell/Pascal) do not.
SPARSE_BOARDS = ("orin", "thor")


def detect_jetson(root: str | Path = "/") -> dict | None:
    """{'model', 'l4t', 'sparse_tensor_cores'} on a Jetson, None elsewhere."""
    root = Path(root)
    release = _read(root / "etc/nv_tegra_release")
    model = _read(root / "proc/device-tree/model")
    if release is None and not (model and ("jetson" in model.lower() or "nvidia" in model.lower())):
        return None
    l4t = None
    if release:
        match = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", release)
        l4t = f"{match.group(1)}.{match.group(2)}" if match else release.splitlines()[0]
    name = model or "unknown Jetson"
    return {
        "model": name,
        "l4t": l4t,
        "sparse_tensor_cores": any(board in name.lower() for board in SPARSE_BOARDS),
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return None


def require_jetson(root: str | Path = "/") -> dict:
    found = detect_jetson(root)
    if found is None:
        raise SltError(
            "--device jetson: this machine is not a Jetson (no /etc/nv_tegra_release, no Jetson "
            "device-tree model); run on the board or use --remote user@board"
        )
    return found


@dataclass
class TegraSample:
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    gpu_load_pct: int | None = None
    rails_mw: dict[str, int] = field(default_factory=dict)  # instantaneous readings

    @property
    def total_power(self) -> tuple[str, int] | None:
        for rail in TOTAL_RAILS:
            if rail in self.rails_mw:
                return rail, self.rails_mw[rail]
        if self.rails_mw:
            return "sum of rails", sum(self.rails_mw.values())
        return None


def parse_tegrastats(line: str) -> TegraSample:
    sample = TegraSample()
    if match := RAM.search(line):
        sample.ram_used_mb, sample.ram_total_mb = int(match.group(1)), int(match.group(2))
    if match := GPU_LOAD.search(line):
        sample.gpu_load_pct = int(match.group(1))
    for name, current, _average in RAIL.findall(line):
        if name not in NOT_RAILS:
            sample.rails_mw[name] = int(current)
    return sample


def summarise(samples: list[TegraSample], seconds_per_inference: float | None, batch: int) -> dict:
    """Means over the samples; energy per inference = mean total power x latency."""
    if not samples:
        return {"samples": 0}
    out: dict = {"samples": len(samples)}
    ram = [s.ram_used_mb for s in samples if s.ram_used_mb is not None]
    if ram:
        out["ram_used_mb_max"] = max(ram)
    loads = [s.gpu_load_pct for s in samples if s.gpu_load_pct is not None]
    if loads:
        out["gpu_load_pct_mean"] = sum(loads) / len(loads)
    totals = [s.total_power for s in samples if s.total_power is not None]
    if totals:
        mean_mw = sum(v for _, v in totals) / len(totals)
        out["power_rail"] = totals[0][0]
        out["power_mw_mean"] = mean_mw
        rails = sorted({name for s in samples for name in s.rails_mw})
        out["rails_mw_mean"] = {
            r: sum(s.rails_mw.get(r, 0) for s in samples) / len(samples) for r in rails
        }
        if seconds_per_inference is not None:
            millijoules = mean_mw * seconds_per_inference  # mW x s = mJ
            out["energy_per_batch_mj"] = millijoules
            out["energy_per_sample_mj"] = millijoules / batch
    return out


class TegrastatsSampler:
    """Runs `tegrastats --interval MS` in the background and parses its lines."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats") -> None:
        self.interval_ms = interval_ms
        self.command = command
        self.samples: list[TegraSample] = []
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TegrastatsSampler:
        executable = shutil.which(self.command)
        if executable is None:
            raise SltError(
                "tegrastats is not on PATH (it ships with L4T); memory and power need it"
            )
        self._process = subprocess.Popen(
            [executable, "--interval", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(self.interval_ms / 1000)
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            self.samples.append(parse_tegrastats(line))

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._thread.join(timeout=5)
