"""`SearchConfig`: the one object a search runs from. The CLI and TOML recipes fill the same
dataclass, so a run directory's config replays the run exactly."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from slt_deploy.errors import SltError

METHOD_NAMES = ("gates", "edge-popup", "dense")  # search/methods.py registers each
GRANULARITIES = ("unstructured", "2:4", "channel", "channel+unstructured")
COSTS = ("weights", "flops")
TARGET_SCOPES = ("all", "structure")
DEVICES = ("auto", "cpu", "cuda")
ON_NAN = ("stop", "skip-batch")
_TYPES = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict": dict,
    "None": type(None),
}


def _has_type(value: object, annotation: str) -> bool:
    """Check a value against a field's annotation (`int`, `float | None`, ...): recipes and
    tickets are data from outside; a wrong type must be a clear error, not a crash later."""
    for name in annotation.split("|"):
        expected = _TYPES[name.strip()]
        if isinstance(value, bool) and expected is not bool:
            continue  # True is an int to Python, not to a user
        if isinstance(value, expected):
            return True
    return False


COMPILE_MIN_STEPS = 2000


# Settings added after runs were first recorded, with the value that reproduces what those runs
# did (a recorded config without the key ran without the feature).
ADDED_SETTINGS = {"windup_reset": False}


@dataclass(frozen=True)
class SearchConfig:
    model: str = "lenet-300-100"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "digits"
    data_dir: str | None = None
    download: bool = False
    subset: int | None = None
    val_split: int | None = None  # training samples held out for validation (not trained on)
    max_steps: int | None = None
    method: str = "gates"
    gate: str = "stg"
    sigma: float | None = None  # stg noise; None: 0.5, 0.25 for sharpened CNN gates (methods)
    sigma_final: float | None = None  # None: σ constant; else cosine from sigma to this
    sigma_start: float | None = None  # fraction of training before σ anneals; None: default
    gate_bound: float | None = None  # stg: keep μ within τ ± this · σ; 0: unbounded; None: default
    temperature_final: float | None = None  # stg sharpening, cosine t 1 → this; None: default
    sharpen_start: float | None = None  # fraction of training before sharpening; None: default
    noise: str = "table"
    compile: bool | None = None  # None: compile the gate kernels when the run is long
    loss_temperature: str = "auto"  # auto: learned for mask methods, none for dense
    gate_init: float | None = None
    threshold: float = 0.5
    granularity: str = "unstructured"
    cost: str = "weights"  # gates: what --target-sparsity removes a fraction of
    target_scope: str = "all"  # all: every zero counts; structure: only what shrinking drops
    init: str | None = None  # None: the method's default scheme
    init_gain: float | None = None
    scale_fan: bool | None = None  # None: the method's default
    target_sparsity: float | None = None
    l0: float | None = None
    controller_rate: float = 0.01
    sparsity_ramp: float = 0.35  # fraction of training over which the target density ramps down
    windup_reset: bool | None = None  # drop the integral at the first crossing after the ramp
    exact_target: bool = False  # gates: final mask keeps exactly round((1 − s) · n) weights
    epochs: int = 15
    batch_size: int = 128
    optimizer: str | None = None  # None: the method's default (as lr, momentum, weight_decay)
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = False  # CUDA: NHWC weights and inputs for convolutions
    learn_bias: bool = False
    affine_bn: bool = False
    eval_batch_size: int = 1000
    on_nan: str = "stop"  # stop | skip-batch: what a non-finite loss or gradient does

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        if not isinstance(data, dict):
            raise SltError("search settings must be a table of key = value")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise SltError(f"unknown search setting(s): {', '.join(unknown)}")
        for name, value in data.items():
            if not _has_type(value, types[name]):
                raise SltError(
                    f"search setting {name}: expected {types[name]}, got {value!r}"[:200]
                )
        return cls(**data)

    @staticmethod
    def recorded_key(saved: dict) -> dict:
        """A replay key recorded by an earlier version, completed with the value each setting
        added since then had in effect before it existed (ADDED_SETTINGS), so a run checkpointed
        before an upgrade resumes when the same settings are given."""
        return {**{k: v for k, v in ADDED_SETTINGS.items() if k not in saved}, **saved}

    def replay_key(self) -> dict:
        """The settings that must match for a checkpoint to be resumed (all that can change
        the result: not what happens on a NaN, which a resumed run may choose anew)."""
        key = self.to_dict()
        key.pop("on_nan")
        return key

    def validate(self) -> SearchConfig:
        from slt_deploy.masking.gates import GATES

        if self.method not in METHOD_NAMES:
            known = ", ".join(sorted(METHOD_NAMES))
            raise SltError(f"unknown method {self.method!r}; known: {known}")
        GATES.get(self.gate)
        if self.target_sparsity is not None and not 0.0 < self.target_sparsity < 1.0:
            raise SltError(f"--target-sparsity must lie in (0, 1), got {self.target_sparsity}")
        if self.target_sparsity is not None and self.l0 is not None:
            raise SltError("give --target-sparsity or --l0, not both")
        if self.method == "edge-popup" and self.target_sparsity is None:
            raise SltError("edge-popup needs --target-sparsity (the fraction of weights removed)")
        if self.l0 is not None and self.l0 < 0:
            raise SltError("--l0 must be >= 0")
        if self.granularity == "2:4" and self.method != "gates":
            raise SltError("--granularity 2:4 is a gates search (edge-popup has no 2:4 variant)")
        if (
            self.granularity == "2:4"
            and self.target_sparsity is not None
            and self.target_sparsity < 0.5
        ):
            raise SltError(
                "--granularity 2:4 removes at least half of the weights: "
                "--target-sparsity must be >= 0.5"
            )
        if self.granularity not in GRANULARITIES:
            raise SltError(f"--granularity must be one of {', '.join(GRANULARITIES)}")
        if self.granularity.startswith("channel") and self.method != "gates":
            raise SltError(f"--granularity {self.granularity} is a gates search")
        if self.cost not in COSTS:
            raise SltError(f"--cost must be one of {', '.join(COSTS)}")
        if self.cost != "weights" and (self.method != "gates" or self.granularity == "2:4"):
            raise SltError(
                "--cost flops weighs gates (unstructured or channel): not edge-popup, dense or 2:4"
            )
        if self.target_scope not in TARGET_SCOPES:
            raise SltError(f"--target-scope must be one of {', '.join(TARGET_SCOPES)}")
        if self.target_scope != "all" and not self.granularity.startswith("channel"):
            raise SltError(
                "--target-scope structure counts removed channels: use it with "
                "--granularity channel or channel+unstructured"
            )
        if self.device not in DEVICES:
            raise SltError(f"--device must be one of {', '.join(DEVICES)}")
        if not 0.0 < self.threshold < 1.0:
            raise SltError("--threshold must lie in (0, 1)")
        if self.loss_temperature not in ("auto", "none", "learned"):
            raise SltError("--loss-temperature must be auto, none or learned")
        if self.noise not in ("table", "fresh"):
            raise SltError("--noise must be table or fresh")
        if self.sigma is not None and self.sigma <= 0:
            raise SltError("--sigma must be > 0")
        if self.sigma_final is not None:
            if self.sigma_final <= 0:
                raise SltError("--sigma-final must be > 0")
            if self.method != "gates" or self.gate != "stg":
                raise SltError("--sigma-final anneals the noise of stg gates (--method gates)")
        if self.temperature_final is not None:
            if not 0.0 < self.temperature_final <= 1.0:
                raise SltError("--temperature-final must lie in (0, 1]")
            if self.method != "gates" or self.gate != "stg":
                raise SltError("--temperature-final sharpens stg gates (--method gates)")
        if not 0.0 < self.sparsity_ramp <= 1.0:
            raise SltError("--sparsity-ramp must lie in (0, 1]")
        if self.sharpen_start is not None and not 0.0 <= self.sharpen_start < 1.0:
            raise SltError("--sharpen-start must lie in [0, 1)")
        if self.gate_bound is not None:
            if self.gate_bound < 0:
                raise SltError("--gate-bound must be >= 0 (0: unbounded)")
            if self.gate_bound > 0 and (self.method != "gates" or self.gate != "stg"):
                raise SltError("--gate-bound bounds the means of stg gates (--method gates)")
        if self.sigma_start is not None and not 0.0 <= self.sigma_start < 1.0:
            raise SltError("--sigma-start must lie in [0, 1)")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise SltError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("subset", "max_steps", "val_split"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SltError(f"--{name.replace('_', '-')} must be >= 1")
        if self.schedule not in ("cosine", "constant"):
            raise SltError("--schedule must be cosine or constant")
        if self.on_nan not in ON_NAN:
            raise SltError(f"--on-nan must be one of {', '.join(ON_NAN)}")
        return self


def load_recipe(path: str | Path) -> dict:
    """A TOML recipe: top-level keys are SearchConfig fields ([model_kwargs] a table)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SltError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SltError(f"recipe {path} is not valid TOML: {exc}") from None
    SearchConfig.from_dict(data)  # rejects unknown keys early
    return data
