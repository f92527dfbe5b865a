"""Jetson support without a Jetson: tegrastats lines as real boards print them, board
detection from the files L4T installs, and the sampler reading a running process."""

import os
import stat

import pytest

from slt_deploy.bench.jetson import (
    TegrastatsSampler,
    detect_jetson,
    parse_tegrastats,
    require_jetson,
    summarise,
)
from slt_deploy.errors import SltError

# Real output lines as posted by users of each board (sources in docs/bench.md).
ORIN_NANO = (
    "11-30-2025 13:26:01 RAM 2461/7620MB (lfb 3x2MB) SWAP 1243/3810MB (cached 5MB) "
    "CPU [19%@729,14%@729,22%@729,8%@729,15%@729,17%@729] EMC_FREQ 4%@2133 GR3D_FREQ 0%@[305] "
    "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@46.531C soc2@47.312C "
    "soc0@46.593C gpu@48.218C tj@48.843C soc1@48.843C VDD_IN 5704mW/5704mW "
    "VDD_CPU_GPU_CV 831mW/831mW VDD_SOC 1624mW/1624mW"
)
AGX_ORIN = (
    "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) "
    "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C "
    "SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C "
    "VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
AGX_XAVIER = (
    "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) "
    "CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% "
    "GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C "
    "PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"
)
TX2 = (
    "RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] "
    "EMC_FREQ 0% GR3D_FREQ 0% PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C "
    "thermal@41.9C Tdiode@41.25C VDD_SYS_GPU 153/158 VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 "
    "VDD_IN 3140/3208 VDD_SYS_CPU 536/590 VDD_SYS_DDR 557/601"
)


def test_orin_nano_line():
    s = parse_tegrastats(ORIN_NANO)
    assert (s.ram_used_mb, s.ram_total_mb, s.gpu_load_pct) == (2461, 7620, 0)
    assert s.rails_mw == {"VDD_IN": 5704, "VDD_CPU_GPU_CV": 831, "VDD_SOC": 1624}
    assert s.total_power == ("VDD_IN", 5704)


def test_agx_orin_line_has_no_vdd_in_so_rails_are_summed():
    s = parse_tegrastats(AGX_ORIN)
    assert (s.ram_used_mb, s.ram_total_mb) == (4321, 62801)
    assert s.rails_mw["VDD_GPU_SOC"] == 2340 and s.rails_mw["VIN_SYS_5V0"] == 4025
    assert "RAM" not in s.rails_mw and "SWAP" not in s.rails_mw
    assert s.total_power == ("sum of rails", 2340 + 390 + 4025 + 0 + 301)


def test_agx_xavier_line_with_bare_rail_names():
    s = parse_tegrastats(AGX_XAVIER)
    assert (s.ram_used_mb, s.gpu_load_pct) == (14700, 0)
    assert s.rails_mw == {
        "GPU": 463, "CPU": 618, "SOC": 2936, "CV": 0, "VDDRQ": 309, "SYS5V": 3306,
    }  # fmt: skip
    assert s.total_power == ("sum of rails", 463 + 618 + 2936 + 309 + 3306)


def test_tx2_line_without_units():
    s = parse_tegrastats(TX2)
    assert s.total_power == ("VDD_IN", 3140) and s.rails_mw["VDD_SYS_DDR"] == 557


def test_summary_energy_per_inference():
    samples = [
        parse_tegrastats(ORIN_NANO),
        parse_tegrastats(ORIN_NANO.replace("5704mW/", "6704mW/")),
    ]
    out = summarise(samples, seconds_per_inference=0.002, batch=8)
    assert out["power_mw_mean"] == pytest.approx(6204)
    assert out["energy_per_batch_mj"] == pytest.approx(6204 * 0.002)
    assert out["energy_per_sample_mj"] == pytest.approx(6204 * 0.002 / 8)
    assert out["power_rail"] == "VDD_IN" and out["ram_used_mb_max"] == 2461
    assert summarise([], 0.001, 1) == {"samples": 0}


def _board(root, release: str | None, model: str | None):
    if release is not None:
        (root / "etc").mkdir(parents=True)
        (root / "etc/nv_tegra_release").write_text(release)
    if model is not None:
        (root / "proc/device-tree").mkdir(parents=True)
        (root / "proc/device-tree/model").write_text(model + "\x00")
    return root


def test_detects_orin_with_sparse_tensor_cores(tmp_path):
    root = _board(
        tmp_path,
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
        "DATE: Fri Sep 13 04:36:44 UTC 2024\n",
        "NVIDIA Jetson AGX Orin Developer Kit",
    )
    found = detect_jetson(root)
    assert found == {
        "model": "NVIDIA Jetson AGX Orin Developer Kit",
        "l4t": "36.4.0",
        "sparse_tensor_cores": True,
    }


def test_xavier_has_no_sparse_tensor_cores(tmp_path):
    root = _board(tmp_path, "# R35 (release), REVISION: 5.0, GCID: 1\n", "Jetson-AGX")
    assert detect_jetson(root)["sparse_tensor_cores"] is False
    root2 = _board(tmp_path / "nx", None, "NVIDIA Jetson Xavier NX Developer Kit")
    assert detect_jetson(root2) == {
        "model": "NVIDIA Jetson Xavier NX Developer Kit",
        "l4t": None,
        "sparse_tensor_cores": False,
    }


def test_not_a_jetson(tmp_path):
    assert detect_jetson(_board(tmp_path, None, "QEMU Virtual Machine")) is None
    with pytest.raises(SltError, match="not a Jetson"):
        require_jetson(tmp_path)


def test_sampler_reads_a_running_tegrastats(tmp_path, monkeypatch):
    """The sampler's process handling, with a stand-in `tegrastats` on PATH that prints the
    Orin Nano line at the requested interval, as the real tool does."""
    script = tmp_path / "tegrastats"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = --interval ] || exit 3\n'
        f"while true; do echo '{ORIN_NANO}'; sleep 0.05; done\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    import time

    with TegrastatsSampler(interval_ms=50) as sampler:
        time.sleep(0.4)
    assert len(sampler.samples) >= 2
    assert all(s.total_power == ("VDD_IN", 5704) for s in sampler.samples)
    assert sampler._process.poll() is not None  # stopped


def test_sampler_without_tegrastats(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SltError, match="tegrastats is not on PATH"):
        TegrastatsSampler().__enter__()
