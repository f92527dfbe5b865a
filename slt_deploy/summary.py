"""One-screen summaries for the terminal (rich tables)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def print_summary(summary: dict, out: Path, console: Console | None = None) -> None:
    console = console or Console()
    head = Table(
        title=f"search: {summary['model']} on {summary['data']} ({summary['method']})",
        show_header=False,
        box=None,
    )
    head.add_row("test accuracy (binary mask)", _pct(summary["test_accuracy"]))
    if summary.get("val_accuracy") is not None:
        head.add_row("validation accuracy", _pct(summary["val_accuracy"]))
    target = f"  (target {_pct(summary['target_sparsity'])})" if summary["target_sparsity"] else ""
    by_structure = summary.get("target_scope") == "structure"
    by_macs = summary.get("cost") == "flops" and not summary.get("granularity", "").startswith(
        "channel"
    )  # unstructured --cost flops: the target is a fraction of multiply-adds
    head.add_row(
        "sparsity (every zero)",
        _pct(summary["sparsity"]) + ("" if by_structure or by_macs else target),
    )
    if summary.get("structured_sparsity") is not None:
        head.add_row(
            "structured sparsity (channels removed)",
            _pct(summary["structured_sparsity"]) + (target if by_structure else ""),
        )
    head.add_row(
        "kept / total weights", f"{summary['params_kept']:,} / {summary['params_total']:,}"
    )
    live = summary.get("params_live")
    if live is not None and live != summary["params_kept"]:
        head.add_row(
            "on live paths (export ships these)",
            f"{live:,} ({_pct(live / summary['params_total'])}; "
            f"{summary['params_kept'] - live:,} on dead paths)",
        )
    if summary.get("macs_total"):
        kept = summary["macs_kept"] / summary["macs_total"]
        removed = f", {_pct(1 - kept)} removed{target})" if by_macs else ")"
        head.add_row(
            "multiply-adds kept",
            f"{summary['macs_kept']:,} / {summary['macs_total']:,} per sample "
            f"({_pct(kept)} kept{removed}",
        )
    if summary.get("undecided_gates") is not None:
        head.add_row("undecided gates (0 < ẑ < 1)", _pct(summary["undecided_gates"]))
    head.add_row("epochs / steps", f"{summary['epochs']} / {summary['steps']}")
    head.add_row("wall time", f"{summary['wall_seconds']:.1f} s on {summary['device']}")
    if not summary.get("pure_ticket", True) and summary["method"] != "dense":
        head.add_row("note", "biases or BatchNorm affine were learned: not a pure strong ticket")
    head.add_row("run directory", str(out))
    console.print(head)
    layers = Table(title="per-layer sparsity")
    for column in ("layer", "kept", "total", "sparsity"):
        layers.add_column(column, justify="left" if column == "layer" else "right")
    for name, row in summary["per_layer"].items():
        layers.add_row(name, f"{row['kept']:,}", f"{row['total']:,}", _pct(row["sparsity"]))
    console.print(layers)


def print_ticket_info(path: Path, meta: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"ticket {path}", show_header=False, box=None)
    config = meta.get("config", {})
    metrics = meta.get("metrics", {})
    table.add_row("format", f"{meta['format']} v{meta['version']}")
    table.add_row("model", f"{meta['model']['name']} {meta['model'].get('kwargs') or ''}")
    table.add_row(
        "method",
        meta["method"] + (f" ({meta['gate']['family']})" if meta["method"] == "gates" else ""),
    )
    table.add_row("granularity", meta["granularity"])
    table.add_row("threshold τ", str(meta["threshold"]))
    init = meta["init"]
    table.add_row(
        "frozen weights", f"{init['scheme']}, seed {init['seed']}, gain {init['gain']:.4g}"
    )
    table.add_row("weight checksum", meta["weight_checksum"][:16] + "…")
    data = meta["data"]
    table.add_row(
        "data", f"{data['name']} {tuple(data['input_shape'])}, {data['num_classes']} classes"
    )
    scope = config.get("target_scope", "all")
    table.add_row(
        "target sparsity",
        _pct(config.get("target_sparsity"))
        + ("  (of the structure: channels removed)" if scope == "structure" else ""),
    )
    for key in ("test_accuracy", "sparsity"):
        table.add_row(key.replace("_", " "), _pct(metrics.get(key)))
    if "params_kept" in metrics:
        table.add_row("kept / total", f"{metrics['params_kept']:,} / {metrics['params_total']:,}")
    console.print(table)
