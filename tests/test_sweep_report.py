"""`sweep` runs a real grid of searches on MNIST and resumes; `report` turns it (and a single
run) into PNGs that decode, a Markdown table and an HTML page that embeds every figure."""

import csv
import html.parser
import json
import math
import shutil

import matplotlib.image
import pytest
from conftest import run_cli

from slt_deploy.report.tables import (
    Point,
    accuracy_at_cost,
    cost_table,
    first_drop,
    level_table,
    sparsity_at,
)

QUICK = ("--data", "mnist", "--subset", "400", "--epochs", "1", "--batch-size", "50", "--quiet")


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.files.append(attrs["data-file"])


def _check_report(directory, expected_figures: set[str]) -> str:
    pngs = {p.name for p in directory.glob("*.png")}
    assert expected_figures <= pngs
    for name in pngs:
        image = matplotlib.image.imread(directory / name)  # decodes, or raises
        assert image.shape[0] > 100 and image.shape[1] > 100
    parser = _Images()
    parser.feed((directory / "report.html").read_text())
    assert sorted(parser.files) == sorted(pngs)  # every figure embedded, nothing dangling
    markdown = (directory / "results.md").read_text()
    assert all(f"({name})" in markdown for name in pngs)
    return markdown


def test_sweep_runs_the_grid_resumes_and_reports(mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    args = ("sweep", *QUICK, "--data-dir", str(mnist_dir), "--methods",
            "gates,edge-popup,dense", "--sparsities", "0.5,0.9", "--seeds", "0,1", "--jobs", "2",
            "--out", str(out))  # fmt: skip
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * 2 * 2 + 2  # (gates, edge-popup) x sparsities x seeds + dense x seeds
    ep = {r["cell"]: r for r in rows}["edge-popup-s0.9-seed1"]
    assert float(ep["sparsity"]) == pytest.approx(0.9, abs=1e-3)
    assert {r["method"] for r in rows} == {"gates", "edge-popup", "dense"}

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/summary.json")}
    redo = out / "cells" / "gates-stg-s0.5-seed1"
    (redo / "summary.json").unlink()
    (redo / "checkpoint.safetensors").unlink()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    for path, stamp in stamps.items():
        assert (path.stat().st_mtime_ns == stamp) == (path.parent != redo), path  # only it re-ran
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 10

    done = run_cli("report", str(out))
    assert done.returncode == 0, done.stderr
    markdown = _check_report(out, {"accuracy_vs_sparsity.png", "per_layer.png",
                                   "training_curves.png", "accuracy_vs_cost.png"})  # fmt: skip
    assert "| gates (stg) | 0.9 |" in markdown and "| dense | – |" in markdown
    assert "gates (stg) / edge-popup" in markdown
    assert "## At equal deployed cost: gates against edge-popup" in markdown
    for row in csv.DictReader((out / "results.csv").open()):  # an MLP: one MAC per weight
        assert row["macs_kept"] == row["params_kept"] and row["macs_total"] == row["params_total"]

    kept = tmp_path / "kept"  # what bench/results keeps of a sweep: its table, not its cells
    kept.mkdir()
    for name in ("results.csv", "sweep.json"):
        shutil.copy(out / name, kept / name)
    done = run_cli("report", str(kept))
    assert done.returncode == 0, done.stderr

    def tables(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("|")]

    assert tables((kept / "results.md").read_text()) == tables(markdown)  # from the table alone

    changed = run_cli(*args[:-2], "--lr", "0.5", "--out", str(out))
    assert changed.returncode == 2 and "other settings (lr)" in changed.stderr


def test_report_of_one_run_with_bench_latency(mnist_dir, tmp_path):
    run = tmp_path / "run"
    done = run_cli("search", *QUICK, "--data-dir", str(mnist_dir), "--epochs", "2",
                   "--target-sparsity", "0.8", "--out", str(run))  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_cli("report", str(run), "--out", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr
    markdown = _check_report(tmp_path / "rep", {"training_curves.png", "per_layer.png",
                                                "gate_histogram.png"})  # fmt: skip
    assert "| fc1 |" in markdown and "test accuracy (binary mask)" in markdown


def _curve(method, pairs):
    return [Point(method, s, s, 0.0, a, 0.0, 3) for s, a in pairs]


def test_drop_and_sparsity_at_accuracy_levels():
    gates = _curve("gates (stg)", [(0.5, 0.970), (0.9, 0.975), (0.95, 0.972), (0.98, 0.960)])
    ep = _curve("edge-popup", [(0.5, 0.980), (0.7, 0.975), (0.9, 0.962), (0.95, 0.95)])
    assert first_drop(gates).target == 0.98  # 0.5 is below the best too, but before it
    assert first_drop(ep).target == 0.9
    assert first_drop(_curve("x", [(0.5, 0.9), (0.9, 0.899)])) is None
    assert sparsity_at(gates, 0.97) == 0.95 and sparsity_at(ep, 0.97) == 0.7
    assert sparsity_at(ep, 0.99) is None
    header, row = level_table(gates + ep, [0.97])
    assert row[0] == "97 %" and row[-1] == f"{0.95 / 0.7:.2f}x, {0.05 / 0.3:.2f}x"
    assert "gates (stg) / edge-popup: sparsity, density" in header
    # at 96% gates still hold at their sparsest point (0.98): a bound, not a value
    _, row = level_table(gates + ep, [0.96])
    assert row[1:] == ["≥ 98.00", "90.00", f"≥ {0.98 / 0.9:.2f}x, ≤ {0.02 / 0.1:.2f}x"]
    short_ep = _curve("edge-popup", [(0.5, 0.980)])  # a sweep stopped after one target
    _, row = level_table(gates + short_ep, [0.97])
    assert row[1:] == ["95.00", "≥ 50.00", f"≤ {0.95 / 0.5:.2f}x, ≥ {0.05 / 0.5:.2f}x"]
    _, row = level_table(gates + short_ep, [0.96])
    assert row[-1] == "beyond both grids"


def test_equal_cost_comparison_interpolates_in_log_cost_and_never_extrapolates():
    kept = lambda p: p.kept_mean  # noqa: E731
    ep = [Point("edge-popup", s, s, 0.0, a, 0.0, 3, macs_mean=m)
          for s, a, m in [(0.9, 0.96, 0.10), (0.99, 0.86, 0.01)]]  # fmt: skip
    # halfway between 10% and 1% kept in log: accuracy halfway between 96 and 86
    assert accuracy_at_cost(ep, 0.1**1.5, kept) == pytest.approx(0.91)
    assert accuracy_at_cost(ep, 0.2, kept) is None and accuracy_at_cost(ep, 0.005, kept) is None
    assert accuracy_at_cost(ep, 0.1015, kept) == pytest.approx(0.96)  # within 2%: that point
    # gates keep convolutions denser: fewer weights but more multiply-adds than edge-popup
    gates = [Point("gates (stg)", 0.95, 0.95, 0.0, 0.95, 0.0, 3, macs_mean=0.15)]
    header, row = cost_table(gates + ep)
    assert header[2:] == [
        "weights kept %", "accuracy − edge-popup's at equal weights kept (points)",
        "multiply-adds kept %", "accuracy − edge-popup's at equal multiply-adds kept (points)",
    ]  # fmt: skip
    at_5 = 0.86 + 0.10 * math.log(5) / math.log(10)  # edge-popup at 5% kept, log-linear
    assert row[:3] == ["gates (stg)", "0.95", "5.00"]
    assert row[3] == f"{100 * (0.95 - at_5):+.2f}"
    assert row[4:] == ["15.00", "outside edge-popup's range"]
    assert cost_table(gates) == []  # nothing to compare against


def test_equal_cost_is_measured_on_what_export_ships_where_runs_recorded_it():
    """Dead-path weights leave every export, so the deployed cost is the live count: here
    edge-popup's 10% ticket ships 6.5% (its dead paths), the gates' 5% ticket 4.8%."""
    ep = [Point("edge-popup", s, s, 0.0, a, 0.0, 1, macs_mean=m, live_mean=lv, live_macs_mean=lv)
          for s, a, m, lv in [(0.9, 0.96, 0.10, 0.065), (0.99, 0.86, 0.01, 0.008)]]  # fmt: skip
    gates = [Point("gates (stg)", 0.95, 0.95, 0.0, 0.95, 0.0, 1, macs_mean=0.05,
                   live_mean=0.048, live_macs_mean=0.048)]  # fmt: skip
    header, row = cost_table(gates + ep)
    assert header[2] == "weights exported %" and header[4] == "multiply-adds exported %"
    at = 0.86 + 0.10 * math.log(0.048 / 0.008) / math.log(0.065 / 0.008)
    assert row[2] == "4.80" and row[3] == f"{100 * (0.95 - at):+.2f}"
    # one run from before the live counts: every point falls back to the searched counts
    old = Point("edge-popup", 0.5, 0.5, 0.0, 0.97, 0.0, 1, macs_mean=0.5)
    assert cost_table([*gates, *ep, old])[0][2] == "weights kept %"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sweep", "--methods", "gates,magic", "--out", "X"), "unknown 'magic'"),
        (("sweep", "--sparsities", "0.5,1.5", "--out", "X"), "1.5 is not in (0, 1)"),
        (("sweep", "--seeds", "a,b", "--out", "X"), "--seeds: expected integers"),
        (("report", "X"), "is not a sweep or run directory"),
        (("report", "."), "nothing to report"),
    ],
)
def test_bad_sweep_and_report_input_is_one_line(args, message, tmp_path):
    args = tuple(str(tmp_path / "x") if a == "X" else a for a in args)
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_structure_scoped_sweep_reports_the_physical_size(tmp_path):
    """A sweep whose targets are physical sizes (--target-scope structure) is plotted and
    tabled against structured sparsity, not against every zero."""
    out = tmp_path / "s"
    done = run_cli("sweep", "--data", "digits", "--epochs", "3", "--quiet", "--methods", "gates",
                   "--granularity", "channel+unstructured", "--target-scope", "structure",
                   "--sparsities", "0.5,0.7", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["cell"]: r for r in csv.DictReader((out / "results.csv").open())}
    cell = rows["gates-stg-s0.7-seed0"]
    structured, every_zero = float(cell["structured_sparsity"]), float(cell["sparsity"])
    assert abs(structured - 0.7) < 0.05 and every_zero > structured + 0.02
    assert run_cli("report", str(out)).returncode == 0
    markdown = _check_report(out, {"accuracy_vs_sparsity.png"})
    assert "structured sparsity" in markdown
    assert f"| gates (stg) | 0.7 | {100 * structured:.2f}" in markdown  # not {every_zero}


def test_sweep_json_records_the_grid(mnist_dir, tmp_path):
    out = tmp_path / "s"
    done = run_cli("sweep", *QUICK, "--data-dir", str(mnist_dir), "--methods", "dense",
                   "--seeds", "3", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "sweep.json").read_text())
    assert record["cells"] == ["dense-seed3"] and record["base"]["data"] == "mnist"
    assert "seed" not in record["base"] and "method" not in record["base"]


@pytest.mark.parametrize(
    ("name", "text"),
    [("summary.json", '{"test_accuracy": "high"}'), ("summary.json", "[1, 2]")],
)
def test_report_refuses_damaged_run_files(name, text, tmp_path):
    (tmp_path / name).write_text(text)
    done = run_cli("report", str(tmp_path))
    assert done.returncode == 2 and "not a summary of slt-deploy search" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
