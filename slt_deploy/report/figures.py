"""matplotlib figures, each saved as a PNG. Built on `Figure` directly, not pyplot: no global
figure state, no GUI back-end, nothing to close."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from slt_deploy.report.tables import Point, cost_measures, curves, dense_reference

DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(
        path, format="png", dpi=DPI, metadata={"Software": None}
    )  # no version stamp: stable bytes
    return path


def accuracy_vs_sparsity(
    points: list[Point],
    title: str,
    xlabel: str = "sparsity (% of weights removed)",
    *,
    path: Path,
) -> Path:
    """Mean ± std over seeds against the achieved (not the target) sparsity."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for method, curve in curves(points).items():
        ax.errorbar(
            [100 * p.sparsity_mean for p in curve],
            [100 * p.accuracy_mean for p in curve],
            xerr=[100 * p.sparsity_std for p in curve],
            yerr=[100 * p.accuracy_std for p in curve],
            marker="o", capsize=3, label=method,
        )  # fmt: skip
    dense = dense_reference(points)
    if dense:
        ax.axhline(100 * dense.accuracy_mean, color="k", ls="--", lw=1, label="dense (trained)")
        if dense.accuracy_std:
            lo, hi = (
                dense.accuracy_mean - dense.accuracy_std,
                dense.accuracy_mean + dense.accuracy_std,
            )
            ax.axhspan(100 * lo, 100 * hi, color="k", alpha=0.08)
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def accuracy_vs_cost(
    points: list[Point],
    latency: dict[str, list[tuple[str, float, float]]],
    title: str,
    *,
    path: Path,
) -> Path:
    """Test accuracy against what deployment pays, each on a log axis so that 90-99.9%
    sparsity can be read: the fraction of weights and of multiply-adds that export ships
    (tables.cost_measures), and p50 latency over the bench run's baseline (per back-end and
    batch, when bench records name the cells; `latency` maps a series to (method, ratio,
    accuracy))."""
    measure = cost_measures(points)
    panels = [*measure, *(["latency"] if latency else [])]
    fig = Figure(figsize=(5 * len(panels), 4.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "latency":
            for series, triples in latency.items():
                for method in sorted({m for m, _, _ in triples}):
                    xy = sorted((r, a) for m, r, a in triples if m == method)
                    ax.plot([x for x, _ in xy], [100 * y for _, y in xy], marker="o",
                            label=f"{method}: {series}")  # fmt: skip
            ax.axvline(1.0, color="k", ls="--", lw=1)
            ax.set(xlabel="p50 latency / baseline p50 (dense ONNX: 1)")
            ax.legend(fontsize="x-small")
        else:
            for method, curve in curves(points).items():
                ax.errorbar(
                    [100 * measure[panel](p) for p in curve],
                    [100 * p.accuracy_mean for p in curve],
                    yerr=[100 * p.accuracy_std for p in curve],
                    marker="o", capsize=3, label=method,
                )  # fmt: skip
            dense = dense_reference(points)
            if dense:
                ax.axhline(100 * dense.accuracy_mean, color="k", ls="--", lw=1, label="dense")
            ax.set(xscale="log", xlabel=f"{panel} (%, log)")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, ...
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.invert_xaxis()  # sparser to the right, as on the accuracy-sparsity plot
            ax.legend(fontsize="small")
        ax.set(ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    return _save(fig, path)


def per_layer_kept(layers_by_label: dict[str, dict[str, dict]], title: str, path: Path) -> Path:
    """Kept fraction of each gated layer, one line per run (e.g. per method and target)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    names: list[str] = []
    for label, layers in layers_by_label.items():
        names = list(layers)
        kept = [layers[n]["kept"] / max(1, layers[n]["total"]) for n in names]
        ax.plot(range(len(names)), [100 * k for k in kept], marker="o", label=label)
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right")
    if len(names) > 24:
        ax.set_xticks(range(0, len(names), max(1, len(names) // 24)))
    ax.set(ylabel="weights kept (%)", title=title, yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def training_curves(records_by_label: dict[str, list[dict]], title: str, path: Path) -> Path:
    """Training loss, test accuracy, and sparsity (binary and 1 − expected density) per epoch."""
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, 3)
    for label, records in records_by_label.items():
        epochs = [r["epoch"] for r in records]
        (line,) = axes[0].plot(epochs, [r["train_loss"] for r in records], label=label)
        axes[1].plot(epochs, [100 * r["test_accuracy"] for r in records], color=line.get_color())
        axes[2].plot(epochs, [100 * r["sparsity"] for r in records], color=line.get_color())
        expected = [r.get("expected_density") for r in records]
        if all(e is not None for e in expected):
            axes[2].plot(epochs, [100 * (1 - e) for e in expected], color=line.get_color(), ls=":")
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="test accuracy (%) of the binary mask")
    axes[2].set(xlabel="epoch", ylabel="sparsity (%): binary —, 1 − E[L0] ···")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def gate_histogram(histogram: dict, title: str, path: Path) -> Path:
    """Where the deterministic gates ẑ ended: a decided search has mass only at 0 and 1."""
    bins = histogram["bins"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    width = 1 / len(bins)
    ax.bar([i * width for i in range(len(bins))], bins, width=width, align="edge")
    ax.set(xlabel="deterministic gate ẑ", ylabel="gates", yscale="log", title=title)
    return _save(fig, path)


def latency_vs_sparsity(
    series: dict[str, list[tuple[float, float]]], title: str, path: Path
) -> Path:
    """p50 latency ratio to the dense artifact, per back-end and batch size."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, xy in series.items():
        xy = sorted(xy)
        ax.plot([100 * x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="dense")
    ax.set(xlabel="sparsity (%)", ylabel="p50 latency / dense p50", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)
