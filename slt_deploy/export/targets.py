"""Target profiles: one TOML per deployment target says format, precision, sparsity pattern and
batch sizes, so `export TICKET --target jetson-orin` is one flag instead of five.

The profiles that ship live in `slt_deploy/export/targets/` (package data, so a name resolves
in any install, not only in a clone); `--target` also takes the path of a user's own TOML.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from slt_deploy.errors import SltError
from slt_deploy.export.formats import FORMATS

PROFILES_DIR = Path(__file__).with_name("targets")
SPARSITY = ("any", "2:4", "channel")
INT8_ACTIVATIONS = ("uint8", "int8", "dynamic")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    format: str
    precision: str
    sparsity: str = "any"  # 2:4: the mask is projected to 2:4; channel: a channel ticket only
    batch_sizes: tuple[int, ...] = (1,)
    description: str = ""
    int8_activations: str | None = None  # None: uint8, int8 for TensorRT
    calibration_samples: int | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes)}

    @property
    def max_batch(self) -> int:
        return max(self.batch_sizes)


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_target(name_or_path: str | Path) -> TargetProfile:
    """A shipped profile by name, or a TOML file by path; every mistake is one line."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise SltError(
                f"unknown target {str(name_or_path)!r}; shipped: {', '.join(available())} "
                "(or the path of a .toml profile)"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SltError(f"cannot read target profile {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SltError(f"target profile {path} is not valid TOML: {exc}") from None
    return _parse(path, data)


def _parse(path: Path, data: dict) -> TargetProfile:
    def bad(message: str) -> SltError:
        return SltError(f"target profile {path}: {message}")

    known = {"description", "format", "precision", "sparsity", "batch_sizes"}
    known |= {"int8_activations", "calibration_samples"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key in ("format", "precision"):
        if key not in data:
            raise bad(f"needs {key!r}")
    fmt, precision = data["format"], data["precision"]
    if fmt not in FORMATS:
        raise bad(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    precisions = FORMATS.get(fmt).precisions
    if precision not in precisions:
        raise bad(f"format {fmt} carries {' or '.join(precisions)}, not {precision!r}")
    sparsity = data.get("sparsity", "any")
    if sparsity not in SPARSITY:
        raise bad(f"sparsity must be one of {', '.join(SPARSITY)}, not {sparsity!r}")
    batches = data.get("batch_sizes", [1])
    if (
        not isinstance(batches, list)
        or not batches
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches)
    ):
        raise bad("batch_sizes must be a non-empty list of positive integers")
    activations = data.get("int8_activations")
    if activations is not None and activations not in INT8_ACTIVATIONS:
        raise bad(f"int8_activations must be one of {', '.join(INT8_ACTIVATIONS)}")
    if activations is not None and precision != "int8":
        raise bad("int8_activations needs precision = 'int8'")
    if fmt == "trt" and activations == "dynamic":
        raise bad("TensorRT takes static (calibrated) int8 activations, not dynamic")
    samples = data.get("calibration_samples")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise bad("calibration_samples must be a positive integer")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise bad("description must be a string")
    return TargetProfile(
        name=path.stem,
        format=fmt,
        precision=precision,
        sparsity=sparsity,
        batch_sizes=tuple(sorted(set(batches))),
        description=description,
        int8_activations=activations,
        calibration_samples=samples,
    )
