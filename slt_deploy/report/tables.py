"""Numbers behind the plots: seeds aggregated per (method, target), and the questions people
ask of an accuracy-sparsity curve (where does each method drop; how sparse at a given
accuracy; does "nearly double the sparsity of edge-popup" hold)."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from slt_deploy.sweep import method_label


@dataclass
class Point:
    method: str
    target: float | None
    sparsity_mean: float
    sparsity_std: float
    accuracy_mean: float
    accuracy_std: float
    seeds: int
    macs_mean: float | None = None  # fraction of the weight layers' multiply-adds kept
    # the same two fractions for what export ships: dead-path weights out (masking/paths.py)
    live_mean: float | None = None
    live_macs_mean: float | None = None

    @property
    def kept_mean(self) -> float:
        """Fraction of the weights kept."""
        return 1.0 - self.sparsity_mean


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[Point]:
    """Mean and sample std over seeds of each (method, target sparsity)."""
    groups: dict[tuple[str, float | None], list[dict]] = {}
    for row in rows:
        key = (method_label(row["method"], row["gate"]), row["target_sparsity"])
        groups.setdefault(key, []).append(row)
    points = []
    for (method, target), members in groups.items():
        acc = [float(r["test_accuracy"]) for r in members]
        sp = [float(r["sparsity"]) for r in members]
        macs = [_fraction(r, "macs_kept", "macs_total") for r in members]
        live = [_fraction(r, "params_live", "params_total") for r in members]
        live_macs = [_fraction(r, "macs_live", "macs_total") for r in members]
        points.append(
            Point(method, target, statistics.fmean(sp), _std(sp), statistics.fmean(acc), _std(acc),
                  len(members), _mean_or_none(macs), _mean_or_none(live), _mean_or_none(live_macs))
        )  # fmt: skip
    return sorted(points, key=lambda p: (p.method, p.target if p.target is not None else -1.0))


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if None in values else statistics.fmean(values)


def _fraction(row: dict, part: str, whole: str) -> float | None:
    """row[part] / row[whole]; None where a summary from before has not recorded them."""
    kept, total = row.get(part), row.get(whole)
    if not isinstance(kept, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return kept / total


def curves(points: list[Point]) -> dict[str, list[Point]]:
    """Per sparse method, its points in order of sparsity (dense is a reference, not a curve)."""
    out: dict[str, list[Point]] = {}
    for p in points:
        if p.method != "dense":
            out.setdefault(p.method, []).append(p)
    return {m: sorted(ps, key=lambda p: p.sparsity_mean) for m, ps in out.items()}


def dense_reference(points: list[Point]) -> Point | None:
    return next((p for p in points if p.method == "dense"), None)


def first_drop(curve: list[Point], points: float = 0.01) -> Point | None:
    """Past the method's best point, the least sparse one whose mean accuracy is `points`
    below that best (None: it never drops within the measured range)."""
    best = max(curve, key=lambda p: p.accuracy_mean)
    return next(
        (p for p in curve
         if p.sparsity_mean > best.sparsity_mean and p.accuracy_mean < best.accuracy_mean - points),
        None,
    )  # fmt: skip


def sparsity_at(curve: list[Point], level: float) -> float | None:
    """The highest measured mean sparsity at which mean accuracy still reaches `level`."""
    reached = [p.sparsity_mean for p in curve if p.accuracy_mean >= level]
    return max(reached) if reached else None


def default_levels(points: list[Point]) -> list[float]:
    """Whole percentages 1, 2, 3 and 5 points below the best sparse accuracy."""
    sparse = [p.accuracy_mean for p in points if p.method != "dense"]
    if not sparse:
        return []
    top = math.floor(100 * max(sparse))
    return [(top - k) / 100 for k in (1, 2, 3, 5) if top - k > 0]


def _pct(x: float | None, std: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def result_table(points: list[Point]) -> list[list[str]]:
    """With the multiply-adds kept, and the weights export ships, where every run recorded
    them."""
    macs = all(p.macs_mean is not None for p in points)
    live = all(p.live_mean is not None for p in points)
    header = ["method", "target sparsity", "sparsity %", "test accuracy %", "seeds"]
    header += ["multiply-adds kept %"] if macs else []
    header += ["weights exported % (dead paths out)"] if live else []
    rows = [
        [p.method, "–" if p.target is None else f"{p.target:g}",
         _pct(p.sparsity_mean, p.sparsity_std), _pct(p.accuracy_mean, p.accuracy_std),
         str(p.seeds), *([_pct(p.macs_mean)] if macs else []),
         *([_pct(p.live_mean)] if live else [])]
        for p in points
    ]  # fmt: skip
    return [header, *rows]


def drop_table(points: list[Point]) -> list[list[str]]:
    header = [
        "method",
        "best accuracy %",
        "at sparsity %",
        "first point ≥ 1 below best",
        "accuracy %",
    ]
    rows = []
    for method, curve in curves(points).items():
        best = max(curve, key=lambda p: p.accuracy_mean)
        drop = first_drop(curve)
        rows.append([method, _pct(best.accuracy_mean), _pct(best.sparsity_mean),
                     "none measured" if drop is None else f"sparsity {_pct(drop.sparsity_mean)} %",
                     _pct(drop.accuracy_mean) if drop else "–"])  # fmt: skip
    return [header, *rows]


def level_table(points: list[Point], levels: list[float]) -> list[list[str]]:
    """Highest sparsity per method at each accuracy level, with gates / edge-popup ratios of
    sparsity and of the weights left (density): the paper's "nearly double" claim, checked.
    Where a method still reaches the level at its sparsest measured point, its true reach is
    beyond the grid: the entry reads "≥ x" and a ratio built on it is a bound, not a value
    (an unfinished sweep must not pass for a measured ratio)."""
    lines = curves(points)
    methods = list(lines)
    gates = [m for m in methods if m.startswith("gates")]
    header = ["accuracy ≥", *(f"{m} sparsity %" for m in methods)]
    if "edge-popup" in lines:
        header += [f"{g} / edge-popup: sparsity, density" for g in gates]
    rows = []
    for level in levels:
        reach = {m: sparsity_at(lines[m], level) for m in methods}
        beyond = {m: reach[m] is not None and reach[m] == lines[m][-1].sparsity_mean
                  for m in methods}  # fmt: skip
        row = [f"{100 * level:g} %",
               *(("≥ " if beyond[m] else "") + _pct(reach[m]) for m in methods)]  # fmt: skip
        if "edge-popup" in lines:
            ep = reach["edge-popup"]
            for g in gates:
                if reach[g] is None or ep is None or ep == 0:
                    row.append("–")
                    continue
                # gates beyond the grid: both ratios' true values are larger / smaller
                up, down = beyond[g], beyond["edge-popup"]
                if up and down:
                    row.append("beyond both grids")
                    continue
                sparsity = {(True, False): "≥ ", (False, True): "≤ "}.get((up, down), "")
                density = {(True, False): "≤ ", (False, True): "≥ "}.get((up, down), "")
                row.append(f"{sparsity}{reach[g] / ep:.2f}x, "
                           f"{density}{(1 - reach[g]) / (1 - ep):.2f}x")  # fmt: skip
        rows.append(row)
    return [header, *rows]


COST_TOLERANCE = math.log(1.02)  # 2%, relative


def accuracy_at_cost(curve: list[Point], cost: float, measure) -> float | None:
    """A method's mean accuracy at `cost` (a kept fraction), interpolated linearly in
    log(cost) between its two measured points around it; None outside its measured range
    (no extrapolation: a curve can fall off a cliff just past its last point), except within
    COST_TOLERANCE of an end point, which counts as that point (a ticket that kept 50.2% where
    the other kept 50.0% is at the same cost)."""
    xy = sorted((math.log(measure(p)), p.accuracy_mean) for p in curve if measure(p))
    if not xy:
        return None
    x, low, high = math.log(cost), xy[0][0], xy[-1][0]
    if low - COST_TOLERANCE <= x < low:
        x = low
    elif high < x <= high + COST_TOLERANCE:
        x = high
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def cost_measures(points: list[Point]) -> dict[str, Callable[[Point], float | None]]:
    """The deployed-cost axes, by name: the weights and multiply-adds that export ships (kept
    weights on dead paths removed, masking/paths.py) where every run recorded them, else what
    the search kept (summaries from before). The two differ: on fc-4096 at 90%, 35% of
    edge-popup's kept weights and 14% of the gates' lie on dead paths (docs/export.md)."""
    if all(p.live_mean is not None for p in points):
        measures = {"weights exported": lambda p: p.live_mean}
        if all(p.live_macs_mean for p in points):
            measures["multiply-adds exported"] = lambda p: p.live_macs_mean
        return measures
    measures = {"weights kept": lambda p: p.kept_mean}
    if all(p.macs_mean for p in points):
        measures["multiply-adds kept"] = lambda p: p.macs_mean
    return measures


def cost_table(points: list[Point]) -> list[list[str]]:
    """Where each method wins at equal deployed cost: every gates point against edge-popup's
    accuracy interpolated at the same fraction of weights kept, and of multiply-adds kept.
    Gates set per-layer sparsity themselves, so the two costs can rank the methods
    differently (a convolution's weight is applied at every pixel, a classifier's once)."""
    lines = curves(points)
    if "edge-popup" not in lines:
        return []
    edge_popup = lines["edge-popup"]
    costs = {name: f for name, f in cost_measures(points).items() if all(f(p) for p in edge_popup)}
    header = ["method", "target"]
    for name in costs:
        header += [f"{name} %", f"accuracy − edge-popup's at equal {name} (points)"]
    rows = []
    for method, curve in lines.items():
        if not method.startswith("gates"):
            continue
        for p in curve:
            row = [method, "–" if p.target is None else f"{p.target:g}"]
            for measure in costs.values():
                cost = measure(p)
                other = None if not cost else accuracy_at_cost(edge_popup, cost, measure)
                row.append(_pct(cost) if cost else "–")
                row.append(
                    "outside edge-popup's range" if other is None
                    else f"{100 * (p.accuracy_mean - other):+.2f}"
                )  # fmt: skip
            rows.append(row)
    return [header, *rows] if len(costs) and rows else []


def markdown(table: list[list[str]]) -> str:
    header, *rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
