"""Optional runtimes: which ONNX Runtime build is installed, and importing it with a clear error.

ONNX Runtime ships as several distributions (`onnxruntime`, `onnxruntime-gpu`, ...) that all
install the same `onnxruntime` package. Installed together they overwrite each other's files
and whichever was installed last wins, so its own docs say to install exactly one. The
`cpu` and `gpu` extras of slt-deploy each select one, and `slt-deploy doctor` says which is
there.
"""

from __future__ import annotations

import sys
from importlib import metadata

from slt_deploy.errors import SltError

ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
)
INSTALL_ORT = "pip install 'slt-deploy[cpu]' (or 'slt-deploy[gpu]' for CUDA)"
FIX_CONFLICT = (
    "pip uninstall -y {builds} and install one of them again ('slt-deploy[cpu]' or "
    "'slt-deploy[gpu]')"
)
_warned = False


def onnxruntime_builds() -> list[str]:
    """The installed distributions that provide the `onnxruntime` package, with versions."""
    builds = []
    for name in ORT_DISTRIBUTIONS:
        try:
            builds.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return builds


def conflict_message(builds: list[str]) -> str:
    names = " ".join(build.split("==")[0] for build in builds)
    return (
        f"{len(builds)} ONNX Runtime builds are installed ({', '.join(builds)}); they overwrite "
        f"each other and the last installed wins: {FIX_CONFLICT.format(builds=names)}"
    )


def import_onnxruntime():
    """`import onnxruntime`, or a one-line SltError saying how to install it; warns once on
    stderr when several builds are installed."""
    global _warned
    try:
        import onnxruntime
    except ImportError:
        raise SltError(f"ONNX Runtime is not installed: {INSTALL_ORT}") from None
    builds = onnxruntime_builds()
    if len(builds) > 1 and not _warned:
        _warned = True
        print(f"warning: {conflict_message(builds)}", file=sys.stderr)
    return onnxruntime


def _version(module: str) -> str | None:
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def environment_report() -> tuple[list[tuple[str, str]], list[str]]:
    """What `slt-deploy doctor` prints: (component, what is installed) rows, and the problems
    that stop a runtime from working as installed."""
    import torch

    cuda = torch.version.cuda or "none"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible"
    rows = [("torch", f"{torch.__version__} (CUDA build {cuda}; {gpu})")]
    problems = []
    builds = onnxruntime_builds()
    if not builds:
        rows.append(("onnxruntime", f"not installed: {INSTALL_ORT}"))
        problems.append(f"ONNX Runtime is not installed: {INSTALL_ORT}")
    elif len(builds) > 1:
        rows.append(("onnxruntime", ", ".join(builds)))
        problems.append(conflict_message(builds))
    else:
        try:
            import onnxruntime

            providers = ", ".join(onnxruntime.get_available_providers())
            rows.append(("onnxruntime", f"{builds[0]} (providers: {providers})"))
        except ImportError as exc:
            rows.append(("onnxruntime", f"{builds[0]}: import failed"))
            problems.append(f"{builds[0]} is installed but does not import: {exc}")
    for module, name, extra in (
        ("tensorrt", "tensorrt", "tensorrt"),
        ("nvidia-ml-py", "NVML probe (nvidia-ml-py)", "gpu"),
    ):
        version = _version(module)
        rows.append((name, version or f"not installed (optional: 'slt-deploy[{extra}]')"))
    return rows, problems
