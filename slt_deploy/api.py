"""The Python API: each stage is one call that takes its config object, as the CLI does.

    from slt_deploy.api import BenchRequest, ExportRequest, SearchConfig, bench, export, search

    summary = search(SearchConfig(data="mnist", data_dir="data/mnist", target_sparsity=0.9),
                     "runs/lenet")
    report = export(ExportRequest("runs/lenet", "onnx", "lenet.onnx"))
    rows = bench(BenchRequest(("lenet.onnx", "runs/lenet"), batch_sizes=(1, 32)))

The names live here, not on `slt_deploy` itself: `slt_deploy.search`, `.export` and `.bench`
are the stages' packages, and a function of the same name there would be replaced by the
package the moment any of its modules is imported. Importing this module imports torch.
"""

from __future__ import annotations

from slt_deploy.bench.run import BenchRequest, bench
from slt_deploy.bench.runners import RunnerOptions
from slt_deploy.bench.timing import TimingPolicy
from slt_deploy.export import export
from slt_deploy.export.request import BuildOptions, ExportRequest, Int8Options
from slt_deploy.export.targets import load_target
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search

__all__ = [
    "BenchRequest",
    "BuildOptions",
    "ExportRequest",
    "Int8Options",
    "RunnerOptions",
    "SearchConfig",
    "TimingPolicy",
    "bench",
    "export",
    "load_target",
    "search",
]
