"""`ExportRequest`: everything one export needs, checked once, passed to every format's
write; with the option types of int8 quantization and of TensorRT builds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slt_deploy.errors import SltError
from slt_deploy.export.formats import FORMATS
from slt_deploy.export.targets import TargetProfile
from slt_deploy.masking.shrink import DEFAULT_CHANNEL_MULTIPLE

ACTIVATION_TYPES = ("uint8", "int8")
DEFAULT_CALIBRATION_SAMPLES = 512


@dataclass(frozen=True)
class Int8Options:
    dynamic: bool = False  # activations quantized at run time (CPU only; not for TensorRT)
    # uint8 activations with int8 weights is what ONNX Runtime recommends for x86 (VNNI);
    # symmetric int8 activations are what TensorRT (and ARM kernels) take
    activation_type: str = "uint8"
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    exact_weights: bool = True  # seed scales where a channel's weights are ±c

    def validate(self) -> None:
        if self.activation_type not in ACTIVATION_TYPES:
            raise SltError(
                f"--int8-activations must be one of {', '.join(ACTIVATION_TYPES)}, "
                f"not {self.activation_type!r}"
            )
        if self.calibration_samples < 1:
            raise SltError("--calibration-samples must be >= 1")

    def to_dict(self) -> dict:
        return {
            "activations": "dynamic" if self.dynamic else "static",
            "activation_type": "uint8" if self.dynamic else self.activation_type,
            "calibration_samples": 0 if self.dynamic else self.calibration_samples,
            "exact_weights": self.exact_weights,
        }


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = True
    int8: bool = False
    sparse: bool | None = None  # None: on when every 2:4-capable layer is 2:4
    max_batch: int = 32
    workspace_bytes: int = 1 << 30
    timing_cache: Path | None = None


@dataclass(frozen=True)
class ExportRequest:
    """`source`: a run directory, ticket .safetensors or .slt file; `fmt`: a name of
    export.formats.FORMATS; `out`: the artifact to write (its report goes beside it)."""

    source: Path
    fmt: str
    out: Path
    threshold: float | None = None  # override τ
    sparsity: float | None = None  # keep exactly the top (1 − s) gates instead
    data: str | None = None  # data set for parity, accuracy and calibration [the ticket's]
    data_dir: str | None = None
    trt: BuildOptions = field(default_factory=BuildOptions)
    shrink: bool = True  # remove always-zero units (closed channels, dead paths) from ONNX, TRT
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE  # kept channel counts rounded up to this
    int8: Int8Options = field(default_factory=Int8Options)
    target: TargetProfile | None = None  # the profile behind these settings, recorded

    def __post_init__(self) -> None:
        for name in ("source", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(self.data_dir))
        FORMATS.get(self.fmt)  # one line naming the known formats
        if self.channel_multiple < 1:
            raise SltError("--channel-multiple must be >= 1")
        self.int8.validate()

    @property
    def format(self):
        return FORMATS.get(self.fmt)

    @property
    def pattern_24(self) -> bool:
        """Project the mask to 2:4: the format needs it, or the target profile asks for it."""
        return self.format.pattern_24 or (self.target is not None and self.target.sparsity == "2:4")

    @property
    def shrinks(self) -> bool:
        """Shrink the runtime network (network.runtime_network): as asked, except for a 2:4
        mask, whose groups of 4 run along the input features a shrink removes."""
        return self.shrink and not self.pattern_24
