"""The bench table on the terminal, and the JSON / CSV files for machines."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.table import Table

from slt_deploy.atomic import write_text

CSV_COLUMNS = (
    "artifact",
    "backend",
    "device",
    "batch_size",
    "latency_ms.mean",
    "latency_ms.p50",
    "latency_ms.p90",
    "latency_ms.p99",
    "throughput_per_s",
    "peak_memory_bytes",
    "load_seconds",
    "artifact_bytes",
    "iterations",
    "threads",
    "ratio.latency_p50",
    "ratio.throughput",
    "ratio.peak_memory",
    "ratio.artifact_bytes",
)


def _get(record: dict, dotted: str):
    value = record
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(records: list[dict]) -> Table:
    first = records[0]
    title = (
        f"slt-deploy bench · {first['device']} · {first['machine'].get('cpu')} · "
        f"{first['threads']} threads · ratios vs {Path(first['baseline']['artifact']).name} "
        f"({first['baseline']['backend']})"
    )
    out = Table(title=title, title_justify="left")
    for name in ("artifact", "backend", "batch"):
        out.add_column(name)
    for name in ("mean ms", "p50", "p90", "p99", "items/s", "peak MiB", "load s", "KiB"):
        out.add_column(name, justify="right")
    for name in ("p50 ×", "thrpt ×", "mem ×", "size ×"):
        out.add_column(name, justify="right", style="bold")
    for r in records:
        lat, ratio = r["latency_ms"], r["ratio"]
        out.add_row(
            Path(r["artifact"]).name,
            r["backend"],
            str(r["batch_size"]),
            f"{lat['mean']:.3f}",
            f"{lat['p50']:.3f}",
            f"{lat['p90']:.3f}",
            f"{lat['p99']:.3f}",
            f"{r['throughput_per_s']:.0f}",
            _mib(r["peak_memory_bytes"]),
            f"{r['load_seconds']:.2f}",
            f"{r['artifact_bytes'] / 1024:.0f}",
            _x(ratio["latency_p50"]),
            _x(ratio["throughput"]),
            _x(ratio["peak_memory"]),
            _x(ratio["artifact_bytes"]),
        )
    return out


def write_json(path: str | Path, records: list[dict]) -> None:
    write_text(path, json.dumps(records, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, records: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow([_get(record, column) for column in CSV_COLUMNS])
    write_text(path, buffer.getvalue())
