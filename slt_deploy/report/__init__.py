"""`slt-deploy report PATH`: PNG figures, results.md and a self-contained report.html for a
sweep directory (accuracy-sparsity curves across methods and seeds) or a single run directory
(curves over epochs, per-layer sparsity, gate histogram)."""

from __future__ import annotations

import json
from pathlib import Path

from slt_deploy.atomic import atomic_path, write_text
from slt_deploy.errors import SltError
from slt_deploy.report import figures, page, tables
from slt_deploy.sweep import (
    CELLS_DIR,
    SWEEP_FILE,
    is_sweep,
    load_rows,
    method_label,
    rows_from_table,
    valid_summary,
)

REPORT_FILE = "report.html"
MARKDOWN_FILE = "results.md"


def build_report(
    path: str | Path,
    out: str | Path | None = None,
    levels: list[float] | None = None,
    bench_files: tuple[Path, ...] = (),
) -> dict:
    """Write the report of `path` into `out` (default: `path`); return what was written."""
    path = Path(path)
    out = Path(out) if out else path
    if not path.is_dir():
        raise SltError(f"{path} is not a sweep or run directory")
    out.mkdir(parents=True, exist_ok=True)
    if is_sweep(path):
        return _sweep_report(path, out, levels, bench_files)
    if (path / "summary.json").is_file():
        return _run_report(path, out)
    raise SltError(f"{path}: no sweep.json, cells/ or summary.json: nothing to report")


def _save_png(draw, out: Path, name: str, *args) -> Path:
    final = out / name
    with atomic_path(final) as tmp:
        draw(*args, path=tmp)
    return final


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SltError(f"cannot read {path}: {exc}") from None


def _records(metrics: Path) -> list[dict]:
    if not metrics.is_file():
        return []
    lines = metrics.read_text().splitlines()
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except ValueError:
        raise SltError(f"{metrics} is not JSON lines") from None
    fields = ("epoch", "train_loss", "test_accuracy", "sparsity")
    for record in records:
        if not (
            isinstance(record, dict) and all(isinstance(record.get(k), int | float) for k in fields)
        ):
            raise SltError(f"{metrics} is not a metrics log of slt-deploy search")
        histogram = record.get("gate_histogram")
        if histogram is not None and not (
            isinstance(histogram, dict)
            and isinstance(histogram.get("bins"), list)
            and all(isinstance(b, int | float) for b in histogram["bins"])
        ):
            raise SltError(f"{metrics} is not a metrics log of slt-deploy search")
    return records


def _representatives(rows: list[dict]) -> list[dict]:
    """One cell per method for the per-layer and training-curve figures: the lowest seed at the
    target closest to 0.9 (dense: its lowest seed)."""
    chosen: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        label = method_label(row["method"], row["gate"])
        distance = abs((row["target_sparsity"] or 0.9) - 0.9)
        if label not in chosen or distance < abs((chosen[label]["target_sparsity"] or 0.9) - 0.9):
            chosen[label] = row
    return [chosen[k] for k in sorted(chosen)]


def _sweep_report(path: Path, out: Path, levels, bench_files) -> dict:
    rows = load_rows(path) or rows_from_table(path)  # a sweep kept without its cells: its table
    if not rows:
        raise SltError(f"{path}: no finished cells yet (run slt-deploy sweep first)")
    base = _load_json(path / SWEEP_FILE).get("base", {}) if (path / SWEEP_FILE).is_file() else {}
    title = f"{base.get('model', rows[0].get('method'))} on {base.get('data', '?')}"
    structural = base.get("target_scope") == "structure"
    if structural:  # the targets were physical sizes: curves and tables against those
        rows = [
            {**row, "sparsity": row["structured_sparsity"]}
            for row in rows
            if isinstance(row.get("structured_sparsity"), int | float)
        ]
    points = tables.aggregate(rows)
    levels = levels or tables.default_levels(points)
    xlabel = (
        "structured sparsity (% of weights the shrunk network no longer has)"
        if structural
        else "sparsity (% of weights removed)"
    )
    written = [
        _save_png(
            figures.accuracy_vs_sparsity,
            out,
            "accuracy_vs_sparsity.png",
            points,
            f"accuracy vs sparsity: {title}",
            xlabel,
        )
    ]
    reps = _representatives(rows)
    layers = {}
    curves = {}
    for row in reps:
        if not (path / CELLS_DIR / row["cell"]).is_dir():
            continue  # per-layer and curve figures need the cell itself
        label = f"{method_label(row['method'], row['gate'])}"
        if row["target_sparsity"] is not None:
            label += f" @ {row['target_sparsity']:g}"
        summary = _load_json(path / CELLS_DIR / row["cell"] / "summary.json")
        if row["method"] != "dense":
            layers[label] = summary["per_layer"]
        curves[label] = _records(path / CELLS_DIR / row["cell"] / "metrics.jsonl")
    if layers:
        written.append(
            _save_png(
                figures.per_layer_kept,
                out,
                "per_layer.png",
                layers,
                "per-layer kept fraction (lowest seed)",
            )
        )
    if any(curves.values()):
        written.append(
            _save_png(
                figures.training_curves,
                out,
                "training_curves.png",
                {k: v for k, v in curves.items() if v},
                title,
            )
        )
    bench = list(bench_files) + sorted((path / "bench").glob("*.json"))
    ratios = _latency_ratios(rows, bench)
    series = _latency_series(rows, ratios)
    if any(len(curve) > 1 for curve in tables.curves(points).values()):
        written.append(
            _save_png(
                figures.accuracy_vs_cost,
                out,
                "accuracy_vs_cost.png",
                points,
                _latency_accuracy(rows, ratios),
                f"accuracy vs deployed cost: {title}",
            )
        )
    if series:
        written.append(
            _save_png(
                figures.latency_vs_sparsity,
                out,
                "latency_vs_sparsity.png",
                series,
                f"latency vs sparsity: {title}",
            )
        )
    result, drops, reach = (
        tables.result_table(points),
        tables.drop_table(points),
        tables.level_table(points, levels),
    )
    settings = ", ".join(
        f"{k}={base[k]}"
        for k in ("model", "data", "epochs", "subset", "granularity", "target_scope")
        if k in base
    )
    if structural:
        settings += "; sparsity here is structured sparsity (channels, neurons, heads removed)"
    md = [
        f"# {title}\n",
        f"Settings: {settings}; {len(rows)} finished cells.\n",
        "## Accuracy and sparsity (mean ± std over seeds)\n",
        tables.markdown(result),
        "## Where each method drops 1 point below its best\n",
        tables.markdown(drops),
        "## Highest sparsity at an accuracy level\n",
        tables.markdown(reach),
    ]
    sections = [
        ("Settings", f"<p>{settings}; {len(rows)} finished cells.</p>"),
        ("Accuracy and sparsity (mean ± std over seeds)", page.table_html(result)),
        ("Where each method drops 1 point below its best", page.table_html(drops)),
        ("Highest sparsity at an accuracy level", page.table_html(reach)),
    ]
    costs = tables.cost_table(points)
    if costs:
        heading = "At equal deployed cost: gates against edge-popup"
        md += [f"## {heading}\n", tables.markdown(costs)]
        sections.append((heading, page.table_html(costs)))
    written_pages = _write_pages(out, f"slt-deploy sweep: {title}", md, sections, written)
    return {"kind": "sweep", "cells": len(rows), **written_pages}


def _write_pages(
    out: Path, title: str, markdown: list[str], sections: list[tuple[str, str]], figures: list[Path]
) -> dict:
    """results.md and report.html from the same content, the figures appended to both."""
    links = [f"![{p.stem}]({p.name})\n" for p in figures]
    write_text(out / MARKDOWN_FILE, "\n".join([*markdown, *links]))
    html = page.page(title, [*sections, ("Figures", page.figures_html(figures))])
    write_text(out / REPORT_FILE, html)
    return {
        "figures": [str(p) for p in figures],
        "html": str(out / REPORT_FILE),
        "markdown": str(out / MARKDOWN_FILE),
    }


def _latency_ratios(rows: list[dict], files: list[Path]) -> dict[str, dict[str, float]]:
    """From `slt-deploy bench --json` records whose artifact path names a sparse cell: its p50
    over the p50 of the bench run's baseline (its first artifact, e.g. a ticket exported as
    dense ONNX), per back-end, baseline back-end and batch size."""
    by_cell = {r["cell"]: r for r in rows if r["method"] != "dense"}
    records = []
    for file in files:
        data = _load_json(file)
        records.extend(data if isinstance(data, list) else data.get("records", []))
    ratios: dict[str, dict[str, float]] = {}
    for rec in records:
        artifact = str(rec.get("artifact", ""))
        baseline = rec.get("baseline") or {}
        ratio = (rec.get("ratio") or {}).get("latency_p50")
        cell = next((c for c in by_cell if c in Path(artifact).name), None)
        if cell is None or ratio is None or baseline.get("artifact") == artifact:
            continue
        label = f"{rec.get('backend')} over {baseline.get('backend')}"
        label += f", batch {rec.get('batch_size')}"
        ratios.setdefault(label, {})[cell] = float(ratio)
    return ratios


def _latency_series(rows: list[dict], ratios: dict[str, dict[str, float]]) -> dict:
    """Latency ratio against each cell's sparsity, per back-end and batch size."""
    by_cell = {r["cell"]: r for r in rows}
    return {
        series: [(by_cell[c]["sparsity"], ratio) for c, ratio in cells.items()]
        for series, cells in ratios.items()
    }


def _latency_accuracy(rows: list[dict], ratios: dict[str, dict[str, float]]) -> dict:
    """(method, mean latency ratio, mean test accuracy) per method and target over the seeds
    that were benched, per back-end and batch size."""
    by_cell = {r["cell"]: r for r in rows}
    out = {}
    for series, cells in ratios.items():
        groups: dict[tuple[str, float | None], list[tuple[float, float]]] = {}
        for cell, ratio in cells.items():
            row = by_cell[cell]
            key = (method_label(row["method"], row["gate"]), row["target_sparsity"])
            groups.setdefault(key, []).append((ratio, float(row["test_accuracy"])))
        out[series] = [
            (method, sum(r for r, _ in v) / len(v), sum(a for _, a in v) / len(v))
            for (method, _), v in groups.items()
        ]
    return out


def _run_report(path: Path, out: Path) -> dict:
    summary = _load_json(path / "summary.json")
    if not valid_summary(summary):
        raise SltError(f"{path / 'summary.json'} is not a summary of slt-deploy search")
    records = _records(path / "metrics.jsonl")
    title = f"{summary.get('model')} on {summary.get('data')} ({summary.get('method')})"
    written = []
    if records:
        written.append(
            _save_png(
                figures.training_curves,
                out,
                "training_curves.png",
                {summary.get("method", "run"): records},
                title,
            )
        )
    if summary.get("method") != "dense" and summary.get("per_layer"):
        written.append(
            _save_png(
                figures.per_layer_kept,
                out,
                "per_layer.png",
                {"kept": summary["per_layer"]},
                "per-layer kept fraction",
            )
        )
    if records and records[-1].get("gate_histogram"):
        written.append(
            _save_png(
                figures.gate_histogram,
                out,
                "gate_histogram.png",
                records[-1]["gate_histogram"],
                "final deterministic gates",
            )
        )
    head = [
        ["quantity", "value"],
        ["test accuracy (binary mask)", f"{100 * summary['test_accuracy']:.2f} %"],
        ["sparsity", f"{100 * summary['sparsity']:.2f} %"],
        ["kept / total weights", f"{summary['params_kept']:,} / {summary['params_total']:,}"],
        ["epochs / steps", f"{summary.get('epochs')} / {summary.get('steps')}"],
        ["wall time", f"{summary.get('wall_seconds', 0):.1f} s"],
    ]
    per_layer = [["layer", "kept", "total", "sparsity %"]] + [
        [name, f"{v['kept']:,}", f"{v['total']:,}", f"{100 * v['sparsity']:.2f}"]
        for name, v in summary.get("per_layer", {}).items()
    ]
    md = [
        f"# {title}\n",
        tables.markdown(head),
        "## Per layer\n",
        tables.markdown(per_layer),
    ]
    sections = [("Summary", page.table_html(head)), ("Per layer", page.table_html(per_layer))]
    return {"kind": "run", **_write_pages(out, f"slt-deploy run: {title}", md, sections, written)}
