"""Bench back-ends behind one protocol: activate → feed → infer → synchronize → deactivate.

Each runner owns loading and executing one artifact; timing, memory and the machine record
live elsewhere and are the same for all of them (Polygraphy's runner pattern).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from slt_deploy.bench.artifacts import Artifact, deployable
from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.registry import Registry
from slt_deploy.runtimes import import_onnxruntime

FEED_SEED = 0
SPINNING_NOTE = (
    "ONNX Runtime's thread spinning is off: its spinning workers halve the speed of the "
    "runners interleaved with it (measured 2x on torch CSR); costs ORT 0-10% (--ort-spinning)"
)


@dataclass(frozen=True)
class RunnerOptions:
    device: str = "cpu"  # cpu | cuda
    threads: int | None = None
    precision: str = "fp32"  # fp32 | fp16 (CUDA)
    compile: bool = False  # torch.compile for the torch back-end
    cuda_graph: bool = False  # replay a captured CUDA graph (torch, trt)
    sparse_engine: bool | None = None  # TensorRT sparse weights; None: on for 2:4 artifacts
    engine_cache: str | None = None  # directory; None: the default cache
    ort_spinning: bool = True  # ONNX Runtime's default; `bench` turns it off when mixed


@dataclass
class Runner(ABC):
    artifact: Artifact
    options: RunnerOptions
    input_shape: tuple[int, ...] = ()
    data: DataSpec | None = None  # the data spec the artifact records, where it records one
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    backend: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def activate(self) -> None:
        start = time.perf_counter()
        self._load()
        self.synchronize()
        self.load_seconds = time.perf_counter() - start

    @abstractmethod
    def _load(self) -> None: ...

    def feed(self, batch: int) -> object:
        """A seeded random batch already on the device (its values do not change speed)."""
        return self.prepare(self._random(batch))

    @abstractmethod
    def prepare(self, x: torch.Tensor) -> object:
        """A given float32 host batch in the form `infer` takes, on the device: how `eval`
        runs real images through the same back-end `bench` times."""

    @abstractmethod
    def infer(self, feed: object) -> object:
        """One inference; returns the output in the runtime's own form (no copy)."""

    def logits(self, feed: object) -> np.ndarray:
        """The output of one inference on the host, as float32 numpy (for checks, not timing)."""
        out = self.infer(feed)
        self.synchronize()
        if isinstance(out, list):
            out = out[0]
        if isinstance(out, torch.Tensor):
            return out.detach().float().cpu().numpy()
        if hasattr(out, "numpy"):  # onnxruntime.OrtValue
            out = out.numpy()
        return np.asarray(out, dtype=np.float32)

    def synchronize(self) -> None:
        if self.options.device == "cuda":
            torch.cuda.synchronize()

    def deactivate(self) -> None:
        if self.options.device == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _random(self, batch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(FEED_SEED)
        return torch.randn((batch, *self.input_shape), generator=generator)


RUNNERS: Registry[type[Runner]] = Registry("bench back-end")


def runner_for(artifact: Artifact, backend: str, options: RunnerOptions) -> Runner:
    cls = RUNNERS.get(backend)
    if artifact.kind not in cls.kinds:
        raise SltError(
            f"the {backend} back-end cannot run {artifact.label} ({artifact.kind}); it runs "
            f"{', '.join(cls.kinds)}"
        )
    if options.device not in cls.devices:
        raise SltError(
            f"the {backend} back-end runs on {', '.join(cls.devices)}, not {options.device}"
        )
    if options.device == "cuda" and not torch.cuda.is_available():
        raise SltError("--device cuda: no CUDA GPU is visible to torch")
    return cls(artifact, options)


def _folded(artifact: Artifact):
    """The ticket behind the artifact and the folded network its file holds (shrunk where the
    export shrank it)."""
    from slt_deploy.bench.artifacts import runtime_model
    from slt_deploy.export.onnx_format import fold_batchnorm

    net = deployable(artifact)
    return net, fold_batchnorm(runtime_model(artifact, net)).eval()


class _TorchModule(Runner):
    """Shared by the dense and sparse torch back-ends: a module, a device, a dtype."""

    model: nn.Module
    graph: object = None
    static_input: torch.Tensor | None = None
    static_output: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        half = self.options.precision == "fp16" and self.options.device == "cuda"
        return torch.float16 if half else torch.float32

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.options.device, self.dtype)
        if self.options.cuda_graph and self.options.device == "cuda":
            self._capture(x)
        return x

    @torch.no_grad()
    def _capture(self, x: torch.Tensor) -> None:
        """Capture one inference into a CUDA graph after a side-stream warm-up (torch's
        documented recipe); `infer` then replays it with the input copied in."""
        self.static_input = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.model(self.static_input)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = self.model(self.static_input)

    @torch.no_grad()
    def infer(self, feed: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            self.static_input.copy_(feed)
            self.graph.replay()
            return self.static_output
        return self.model(feed)

    def deactivate(self) -> None:
        self.model = None
        self.graph = self.static_input = self.static_output = None
        super().deactivate()


@RUNNERS.register("torch")
class TorchRunner(_TorchModule):
    """The folded dense network in eager PyTorch (optionally torch.compile)."""

    backend = "torch"
    kinds = ("ticket", "slt", "onnx", "csr")

    def _load(self) -> None:
        net, model = _folded(self.artifact)
        self.input_shape, self.data = tuple(net.data.input_shape), net.data
        model = model.to(self.options.device, self.dtype)
        if self.options.device == "cuda" and len(self.input_shape) == 3:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if self.options.compile else model


@RUNNERS.register("torch-sparse")
class TorchSparseRunner(_TorchModule):
    """CSR layers through torch.sparse (CPU, CUDA); on CUDA, Linear layers whose mask is
    2:4 run as semi-structured fp16 tensors (torch has no 2:4 convolution: those stay dense)."""

    backend = "torch-sparse"
    kinds = ("csr", "ticket", "slt", "onnx")

    def _load(self) -> None:
        from slt_deploy.masking.structure import is_24, supports_24
        from slt_deploy.sparse import move_sparse_, sparsify_

        if self.artifact.kind == "csr" and self.options.device == "cpu":
            from slt_deploy.export.csr_format import load

            model, spec, _ = load(self.artifact.path)
            self.input_shape, self.data = tuple(spec.input_shape), spec
            self.model = model
            return
        net, model = _folded(self.artifact)
        self.input_shape, self.data = tuple(net.data.input_shape), net.data
        pattern = {n: supports_24(tuple(m.shape)) and is_24(m) for n, m in net.masks.items()}
        if self.options.device == "cuda" and pattern and all(pattern.values()):
            self.model = _semi_structured(model, list(net.masks), self.notes)
            return
        if self.dtype != torch.float32:
            raise SltError("torch CSR kernels run in fp32; use --precision fp32")
        self.model = move_sparse_(sparsify_(model, sorted(net.masks)), self.options.device)


def _semi_structured(model: nn.Module, names: list[str], notes: list[str]) -> nn.Module:
    from torch.sparse import to_sparse_semi_structured

    model = model.half().cuda()
    converted = []
    for name in names:
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Linear):
            try:
                layer.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach()))
                converted.append(name)
            except (RuntimeError, ValueError) as exc:  # shape limits of the 2:4 kernels
                notes.append(f"{name} stays dense: {str(exc).splitlines()[0]}")
    notes.append(f"2:4 semi-structured Linear layers: {len(converted)} of {len(names)} gated")
    return model


@RUNNERS.register("ort")
class OrtRunner(Runner):
    """ONNX Runtime with all graph optimisations; CPU or CUDA execution provider."""

    backend = "ort"
    kinds = ("onnx", "ticket", "slt", "csr")
    provider_names: ClassVar[dict[str, str]] = {
        "cpu": "CPUExecutionProvider",
        "cuda": "CUDAExecutionProvider",
    }

    def _providers(self) -> list:
        return [self.provider_names[self.options.device]]

    def _load(self) -> None:
        from slt_deploy.export.onnx_format import session, to_onnx_bytes

        if self.artifact.kind == "onnx":
            model, self.data = self.artifact.path, self.artifact.data_spec()
        else:  # a ticket: the same ONNX `export --format onnx` writes, in memory
            net, folded = _folded(self.artifact)
            model = to_onnx_bytes(folded, tuple(net.data.input_shape))
            self.data = net.data
        wanted = self._providers()
        available = import_onnxruntime().get_available_providers()
        missing = [p if isinstance(p, str) else p[0] for p in wanted]
        missing = [p for p in missing if p not in available]
        if missing:
            raise SltError(
                f"ONNX Runtime here lacks {', '.join(missing)} (pip install onnxruntime-gpu "
                "for CUDA and TensorRT)"
            )
        if not self.options.ort_spinning:
            self.notes.append(SPINNING_NOTE)
        self.session = session(
            model,
            wanted,
            threads=self.options.threads,
            spinning=self.options.ort_spinning,
            label=self.artifact.label,
        )
        dims = self.session.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in dims):
            raise SltError(f"{self.artifact.label}: input shape {dims} is not fixed past the batch")
        self.input_shape = tuple(dims)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def prepare(self, x: torch.Tensor) -> object:
        x = x.numpy()
        if self.options.device == "cpu":
            return {self.input_name: x}
        ort = import_onnxruntime()

        binding = self.session.io_binding()  # input and output stay on the GPU
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(self.output_name, "cuda")
        return binding

    def infer(self, feed: object) -> object:
        if isinstance(feed, dict):
            return self.session.run([self.output_name], feed)
        self.session.run_with_iobinding(feed)
        return feed.get_outputs()

    def deactivate(self) -> None:
        self.session = None
        super().deactivate()


@RUNNERS.register("ort-trt")
class OrtTensorrtRunner(OrtRunner):
    """ONNX Runtime's TensorRT execution provider (fp16, engines cached on disk)."""

    backend = "ort-trt"
    kinds = ("onnx", "ticket", "slt", "csr")
    devices = ("cuda",)

    def _providers(self) -> list:
        from slt_deploy.bench.engine_cache import cache_dir

        trt_options = {
            "trt_fp16_enable": self.options.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir(self.options.engine_cache) / "ort-trt"),
            "trt_sparsity_enable": bool(self.options.sparse_engine),
        }
        return [("TensorrtExecutionProvider", trt_options), "CUDAExecutionProvider"]


@RUNNERS.register("trt")
class TensorrtRunner(Runner):
    """A TensorRT engine through the TensorRT Python API: an .engine built by `export`, or
    one built here from the ONNX (cached by artifact hash, GPU and TensorRT version)."""

    backend = "trt"
    kinds = ("engine", "onnx")
    devices = ("cuda",)

    def _load(self) -> None:
        from slt_deploy.bench.engine_cache import engine_for
        from slt_deploy.export import trt_format
        from slt_deploy.export.onnx_format import INPUT_NAME, OUTPUT_NAME

        trt = trt_format.import_tensorrt()
        report = self.artifact.report() or {}
        if self.artifact.kind == "engine":
            if "engine" not in report or "data" not in report:
                raise SltError(
                    f"{self.artifact.label}: its {self.artifact.label}.json (written by export) "
                    "is missing; it records the input shape and the GPU the engine is for"
                )
            trt_format.check_engine_compatible(report["engine"], trt_format.device_record(trt))
            engine_bytes = self.artifact.path.read_bytes()
            self.input_shape = tuple(report["data"]["input_shape"])
            self.data = self.artifact.data_spec()
        else:
            engine_bytes, self.input_shape, note = engine_for(self.artifact, self.options, report)
            self.notes.append(note)
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise SltError(f"TensorRT could not deserialize {self.artifact.label}")
        self.context = self.engine.create_execution_context()
        self.names = (INPUT_NAME, OUTPUT_NAME)
        self.stream = torch.cuda.Stream()
        self.graph = None

    def prepare(self, x: torch.Tensor) -> object:
        input_name, output_name = self.names
        x = x.cuda()
        if not self.context.set_input_shape(input_name, tuple(x.shape)):
            raise SltError(
                f"batch {len(x)} is outside the optimisation profile of {self.artifact.label}"
            )
        out = torch.empty(tuple(self.context.get_tensor_shape(output_name)), device="cuda")
        self.context.set_tensor_address(input_name, x.data_ptr())
        self.context.set_tensor_address(output_name, out.data_ptr())
        if self.options.cuda_graph:
            self._enqueue()  # TensorRT needs one run before capture (shape-dependent setup)
            self.stream.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self._enqueue()
        return (x, out)  # kept alive: the context holds their addresses

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise SltError("TensorRT failed to run the engine")

    def infer(self, feed: object) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._enqueue()
        return feed[1]  # the output buffer the context writes

    def deactivate(self) -> None:
        self.context = self.engine = self.graph = None
        super().deactivate()
