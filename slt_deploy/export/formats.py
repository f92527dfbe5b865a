"""The export formats: one table that every stage reads.

An entry names the module that writes the format and says what the rest of the tool needs to
know about its files: the suffix that identifies them, the kind `bench` and `eval` load them as,
the back-end that runs them by default and the precisions a target profile may ask for. The
`--format` choices, target profiles and `bench`'s suffix table all come from here.

The table imports nothing heavy, so `slt-deploy --help` stays fast; the writer module is
imported when an export runs. Adding a format is a new module of `export/` with
`write(net, request, inputs) -> dict` (and optionally `precheck(request)`), plus its entry
here (docs/design.md, "Extending").
"""

from __future__ import annotations

from dataclasses import dataclass

from slt_deploy.errors import SltError
from slt_deploy.registry import Registry

# artifact kinds and the back-end each runs on by default; "ticket" (a run directory or
# ticket .safetensors) is what search writes, not an export format
DEFAULT_BACKENDS = {"onnx": "ort", "csr": "torch-sparse", "engine": "trt", "slt": "torch"}
TICKET_KIND, TICKET_BACKEND = "ticket", "torch"
# every back-end bench.runners registers (tests/test_cli_choices.py holds the two equal)
BACKEND_NAMES = ("ort", "ort-trt", "torch", "torch-sparse", "trt")


@dataclass(frozen=True)
class ExportFormat:
    name: str
    module: str  # slt_deploy.export.<module> holds write() and, if any, precheck()
    suffixes: tuple[str, ...]  # file name endings that identify the artifact; [0] is advised
    kind: str  # how bench and eval load it: a key of DEFAULT_BACKENDS
    help: str  # one clause for --help
    precisions: tuple[str, ...] = ("fp32",)  # what a target profile may ask of it
    pattern_24: bool = False  # the mask is projected to 2:4 before writing

    @property
    def default_backend(self) -> str:
        return DEFAULT_BACKENDS[self.kind]

    def writer(self):
        """The format's module (imported now: it may pull in ONNX, ORT or TensorRT)."""
        import importlib

        return importlib.import_module(f"slt_deploy.export.{self.module}")


FORMATS: Registry[ExportFormat] = Registry("export format")


def _add(fmt: ExportFormat) -> None:
    FORMATS.register(fmt.name)(fmt)


_add(ExportFormat("onnx", "onnx_format", (".onnx",), "onnx", "dense ONNX with the mask folded in"))
_add(
    ExportFormat(
        "onnx-int8",
        "int8_format",
        (".onnx",),
        "onnx",
        "the same quantized to int8 (QDQ; exact weights for signed-constant tickets)",
        precisions=("int8",),
    )
)
_add(
    ExportFormat(
        "csr",
        "csr_format",
        (".csr.safetensors",),
        "csr",
        "sparse CSR weights for slt-deploy's sparse runtime",
    )
)
_add(ExportFormat("slt", "slt_format", (".slt",), "slt", "seed + bit-packed masks (smallest)"))
_add(
    ExportFormat(
        "2:4",
        "two_four_format",
        (".onnx",),
        "onnx",
        "ONNX with 2:4 weights (projected if the ticket is not 2:4)",
        pattern_24=True,
    )
)
_add(
    ExportFormat(
        "trt",
        "trt_format",
        (".engine", ".plan", ".trt"),
        "engine",
        "a TensorRT engine for this machine's GPU (needs TensorRT and CUDA)",
        precisions=("fp32", "fp16", "int8"),
    )
)


def format_help() -> str:
    return "; ".join(f"{name}: {FORMATS.get(name).help}" for name in FORMATS.names())


def kind_of(name: str) -> str | None:
    """The artifact kind a file name's ending says (the longest matching suffix), or None."""
    matches = [
        (len(suffix), fmt.kind)
        for fmt in map(FORMATS.get, FORMATS.names())
        for suffix in fmt.suffixes
        if name.endswith(suffix)
    ]
    return max(matches)[1] if matches else None


def known_suffixes() -> list[str]:
    return sorted({s for fmt in map(FORMATS.get, FORMATS.names()) for s in fmt.suffixes})


def default_backend(kind: str) -> str:
    if kind == TICKET_KIND:
        return TICKET_BACKEND
    try:
        return DEFAULT_BACKENDS[kind]
    except KeyError:
        raise SltError(f"unknown artifact kind {kind!r}") from None
