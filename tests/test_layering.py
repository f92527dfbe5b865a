"""The package's layering, drawn from its imports (docs/design.md, "Layout").

Every import counts, those inside functions too: a lazy import is still a dependency, and the
cycles this replaced were lazy ones. No network, no data: this reads source files only.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import slt_deploy

PACKAGE = Path(slt_deploy.__file__).parent

# floors in pipeline order; a module may import only from its own floor or below
FLOORS = {
    **dict.fromkeys(
        ("errors", "registry", "atomic", "headers", "checkpoint", "runtimes", "sparse", "init"), 0
    ),
    **dict.fromkeys(("data", "accuracy"), 1),
    "models": 2,
    "masking": 3,
    "search": 4,
    "export": 5,
    **dict.fromkeys(("evaluate", "bench", "sweep", "summary"), 6),
    "report": 7,
    **dict.fromkeys(("cli", "api"), 8),
    "__main__": 9,
    "": 9,  # slt_deploy/__init__.py
}


def _module_name(path: Path) -> str:
    parts = ("slt_deploy", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from pkg import submodule` resolved)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("slt_deploy"):
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("slt_deploy")}
        graph[name] = {t for t in targets if t != name}
    return graph


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in FLOORS, f"{module}: give its package a floor in tests/test_layering.py"
    return FLOORS[top]


def test_no_import_runs_back_up_a_floor():
    upward = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if _floor(b) > _floor(a)
    ]
    assert upward == []


def test_no_import_cycle():
    graph = import_graph()
    # a package's __init__ that imports its own submodules is not a cycle by itself; a
    # submodule importing its package's __init__ back would be, and is counted
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_the_graph_sees_lazy_imports():
    """The test would pass vacuously if it missed imports inside functions."""
    graph = import_graph()
    assert "slt_deploy.bench.runners" in graph["slt_deploy.evaluate"]  # inside evaluate_artifact
    assert len(graph) > 60 and sum(map(len, graph.values())) > 150


def test_a_built_wheel_holds_every_module_and_the_target_profiles(tmp_path):
    """A user's `pip install slt-deploy` gets a wheel, not this checkout: a module or data file
    that setuptools' package discovery misses works here and fails there. Built from a copy, so
    no stale `build/` directory can fill the gap."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = PACKAGE.parent
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(PACKAGE, source / "slt_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("slt_deploy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.relative_to(root).as_posix() for p in PACKAGE.rglob("*.py")}
    wanted |= {p.relative_to(root).as_posix() for p in PACKAGE.glob("export/targets/*.toml")}
    assert len(wanted) > 60 and wanted - names == set()
