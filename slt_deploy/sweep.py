"""A grid of searches (methods x target sparsities x seeds), one run directory per cell.

Resumable by construction: a cell with a summary is done and skipped, a cell with a checkpoint
continues from it, anything else starts over. `results.csv` is rewritten (atomically) after
every finished cell, so a sweep that is stopped still leaves a table of what it has.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from slt_deploy.atomic import write_text
from slt_deploy.errors import SltError

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
CELLS_DIR = "cells"
SWEEP_VERSION = 1
GRID_KEYS = ("method", "gate", "target_sparsity", "seed")
IRRELEVANT = ("on_nan",)  # settings that cannot change a finished cell's result
METHOD_TOKENS = ("gates", "gates:stg", "gates:hard-concrete", "edge-popup", "dense")
# structured_sparsity: channel sweeps only (what the shrunk network no longer has)
RESULT_COLUMNS = (
    "cell", "method", "gate", "seed", "target_sparsity", "sparsity", "test_accuracy",
    "params_kept", "params_total", "epochs", "wall_seconds", "structured_sparsity",
    "macs_kept", "macs_total", "params_live", "macs_live",
)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    method: str
    gate: str | None
    target_sparsity: float | None
    seed: int

    @property
    def name(self) -> str:
        label = f"{self.method}-{self.gate}" if self.gate else self.method
        sparsity = "" if self.target_sparsity is None else f"-s{self.target_sparsity:g}"
        return f"{label}{sparsity}-seed{self.seed}"

    def settings(self, base: dict) -> dict:
        settings = {**base, "method": self.method, "seed": self.seed}
        settings["target_sparsity"] = self.target_sparsity
        if self.gate:
            settings["gate"] = self.gate
        return settings


def parse_methods(text: str, default_gate: str) -> list[tuple[str, str | None]]:
    """`gates,gates:hard-concrete,edge-popup,dense` -> [(method, gate family or None)]."""
    methods = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        if token not in METHOD_TOKENS:
            raise SltError(f"--methods: unknown {token!r} (choose from {', '.join(METHOD_TOKENS)})")
        method, _, gate = token.partition(":")
        methods.append((method, (gate or default_gate) if method == "gates" else None))
    if not methods:
        raise SltError("--methods: give at least one method")
    return list(dict.fromkeys(methods))


def parse_floats(text: str, option: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SltError(f"{option}: expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise SltError(f"{option}: give at least one value")
    return values


def grid(
    methods: list[tuple[str, str | None]], sparsities: list[float], seeds: list[int]
) -> list[Cell]:
    """Every (method, sparsity, seed), seed-major: a sweep stopped early has whole curves for
    its first seeds. Dense has no sparsity, so one cell per seed."""
    for s in sparsities:
        if not 0.0 < s < 1.0:
            raise SltError(f"--sparsities: {s} is not in (0, 1)")
    return [
        Cell(method, gate, s, seed)
        for seed in seeds
        for method, gate in methods
        for s in ([None] if method == "dense" else sparsities)
    ]


def _cell_worker(settings: dict, cell_dir: str, threads: int | None) -> dict:
    """Run one cell (in a worker process when --jobs > 1); SltError becomes a status."""
    import torch

    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search
    from slt_deploy.search.rundir import CHECKPOINT_FILE, SUMMARY_FILE

    if threads:
        torch.set_num_threads(threads)
    directory = Path(cell_dir)
    if (directory / SUMMARY_FILE).is_file():
        return {"status": "skipped"}
    resume = (directory / CHECKPOINT_FILE).is_file()
    try:
        config = SearchConfig.from_dict(settings).validate()
        summary = search(config, directory, resume=resume, force=not resume, progress=False)
    except SltError as exc:
        return {"status": "failed", "error": str(exc)}
    return {"status": "resumed" if resume else "done", "summary": summary}


def _check_base(out: Path, base: dict) -> None:
    """A sweep directory holds one experiment: the grid may grow, the base settings may not."""
    path = out / SWEEP_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())["base"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SltError(f"{path} is not a sweep file of slt-deploy") from None
        defaults = _defaults()  # a key the saved sweep predates counts as its default
        saved, current = {**defaults, **saved}, {**defaults, **base}
        changed = sorted(
            k
            for k in set(saved) | set(current)
            if k not in IRRELEVANT and saved.get(k) != current.get(k)
        )
        if changed:
            raise SltError(
                f"{out} holds a sweep with other settings ({', '.join(changed)}); use another --out"
            )


def _defaults() -> dict:
    from slt_deploy.search.config import SearchConfig

    return {k: v for k, v in SearchConfig().to_dict().items() if k not in GRID_KEYS}


def run_sweep(
    base: dict,
    cells: list[Cell],
    out: str | Path,
    jobs: int = 1,
    on_cell: Callable[[Cell, dict], None] | None = None,
) -> list[dict]:
    """Run every cell not yet done into `out/cells/<name>`; return the rows of results.csv."""
    out = Path(out)
    base = {k: v for k, v in base.items() if k not in GRID_KEYS}
    _check_base(out, base)
    (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)
    known = _recorded_cells(out)
    names = sorted({*known, *(c.name for c in cells)})
    record = {"version": SWEEP_VERSION, "base": base, "cells": names}
    write_text(out / SWEEP_FILE, json.dumps(record, indent=2, sort_keys=True))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    failures: list[str] = []

    def finished(cell: Cell, result: dict) -> None:
        if result["status"] == "failed":
            failures.append(f"{cell.name}: {result['error']}")
        write_results(out)
        if on_cell:
            on_cell(cell, result)

    work = [(c, c.settings(base), str(out / CELLS_DIR / c.name)) for c in cells]
    if jobs <= 1:
        for cell, settings, directory in work:
            finished(cell, _cell_worker(settings, directory, None))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_cell_worker, s, d, threads): c for c, s, d in work}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    rows = write_results(out)
    if failures:
        raise SltError(f"{len(failures)} of {len(cells)} cells failed; first: {failures[0]}")
    return rows


def _recorded_cells(out: Path) -> list[str]:
    try:
        return list(json.loads((out / SWEEP_FILE).read_text())["cells"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def load_rows(out: str | Path) -> list[dict]:
    """One row per finished cell, read from the cells' own summaries (the source of truth)."""
    rows = []
    for summary_path in sorted(Path(out, CELLS_DIR).glob("*/summary.json")):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue  # a damaged cell is re-run, not reported
        if not valid_summary(summary):
            continue
        row = {k: summary.get(k) for k in RESULT_COLUMNS if k != "cell"}
        row["cell"] = summary_path.parent.name
        rows.append(row)
    return rows


def rows_from_table(out: str | Path) -> list[dict]:
    """The rows of a sweep's results.csv, for a sweep kept without its cells (bench/results
    keeps only the table): numbers as numbers, empty cells as None, invalid rows left out."""
    path = Path(out, RESULTS_FILE)
    if not path.is_file():
        return []
    rows = []
    for raw in csv.DictReader(io.StringIO(path.read_text())):
        row: dict = {}
        for key, value in raw.items():
            if value in ("", None):
                row[key] = None
                continue
            try:
                row[key] = int(value) if value.lstrip("-").isdigit() else float(value)
            except ValueError:
                row[key] = value
        if valid_summary(row):
            rows.append(row)
    return rows


def valid_summary(summary: object) -> bool:
    """The fields a report computes with, with the types it needs (summaries are files too)."""
    if not isinstance(summary, dict):
        return False
    numbers = ("test_accuracy", "sparsity")
    if not all(isinstance(summary.get(k), int | float) for k in numbers):
        return False
    target = summary.get("target_sparsity")
    return (
        isinstance(summary.get("method"), str)
        and isinstance(summary.get("seed"), int)
        and (target is None or isinstance(target, int | float))
        and (summary.get("gate") is None or isinstance(summary.get("gate"), str))
        and isinstance(summary.get("per_layer", {}), dict)
    )


def write_results(out: Path) -> list[dict]:
    rows = load_rows(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / RESULTS_FILE, buffer.getvalue())
    return rows


def is_sweep(path: str | Path) -> bool:
    return Path(path, SWEEP_FILE).is_file() or Path(path, CELLS_DIR).is_dir()


def method_label(method: str, gate: str | None) -> str:
    return f"gates ({gate})" if method == "gates" and gate else method


def seeds_from(text: str) -> list[int]:
    try:
        return sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise SltError(f"--seeds: expected integers separated by commas, got {text!r}") from None
