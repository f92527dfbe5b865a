"""`export(source, fmt, out)`: a ticket or .slt file → a deployable artifact + its report.

Formats live in one registry; each is a function `(net, request, inputs) -> report fields`
with at least `parity`. Every export is checked against PyTorch on real inputs and is
byte-for-byte reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from slt_deploy.errors import SltError
from slt_deploy.export import csr_format, int8_format, onnx_format, slt_format
from slt_deploy.export.network import Deployable, from_ticket
from slt_deploy.export.report import write_report
from slt_deploy.export.targets import TargetProfile
from slt_deploy.masking.shrink import DEFAULT_CHANNEL_MULTIPLE
from slt_deploy.masking.structure import compressed_24_bytes, is_24, supports_24
from slt_deploy.registry import Registry

PARITY_SAMPLES = 256


@dataclass(frozen=True)
class ExportRequest:
    source: Path
    fmt: str
    out: Path
    threshold: float | None = None
    sparsity: float | None = None
    data: str | None = None
    data_dir: str | None = None
    trt: object | None = None  # trt_format.BuildOptions
    shrink: bool = True  # channel tickets: remove closed channels from ONNX and TensorRT
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE  # kept channel counts rounded up to this
    int8: int8_format.Int8Options = field(default_factory=int8_format.Int8Options)


Writer = Callable[[Deployable, ExportRequest, torch.Tensor], dict]
FORMATS: Registry[Writer] = Registry("export format")


def _check_parity(parity: dict, out: Path, runtime: str) -> dict:
    """|Δ| ≤ 1e-4 · max(1, max |logit|): 1e-4 absolute for unit-scale logits, relative for large
    ones, where an absolute 1e-4 would be below float32's resolution (measured: Conv-4 logits
    reach 1.4e4, one ulp ≈ 1e-3, and ORT's convolutions differ from torch's there)."""
    bound = 1e-4 * max(1.0, parity["max_abs_logit"])
    parity["tolerance"] = bound
    if parity["max_abs_diff"] > bound:
        raise SltError(
            f"{out}: {runtime} differs from PyTorch by {parity['max_abs_diff']:.2e} (> 1e-4)"
        )
    return parity


@FORMATS.register("onnx")
def _onnx(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    model, shrunk = runtime_network(net, request)
    onnx_format.write(model, tuple(net.data.input_shape), request.out)
    # against the masked network: the shrunk one must compute the same function
    parity = onnx_format.parity(request.out, net.model, inputs)
    return {
        "parity": _check_parity(parity, request.out, "ONNX Runtime"),
        "opset": onnx_format.OPSET,
        **shrunk,
    }


def runtime_network(net: Deployable, request: ExportRequest) -> tuple[torch.nn.Module, dict]:
    """The network a dense runtime (ONNX, TensorRT) gets, shrunk once, and the report of what
    shrinking removed: a channel ticket's closed channels gone (masking/shrink.py; kept counts
    rounded up to `channel_multiple`) unless --no-shrink; any other ticket as folded."""
    if not net.channel_ticket:
        return net.model, {}
    from slt_deploy.masking.shrink import measure, shrink

    shape = tuple(net.data.input_shape)
    if request.shrink:
        small, kept = shrink(net.model, shape, request.channel_multiple)
    else:
        small, kept = net.model, {}
    before, after = measure(net.model, shape), measure(small, shape)
    return small, {
        "shrunk": {
            "applied": request.shrink,
            "before": before.to_dict(),
            "after": after.to_dict(),
            "params_ratio": after.params / before.params,
            "macs_ratio": after.macs / before.macs,
            "channels_kept": kept,
            "channel_multiple": request.channel_multiple,
        }
    }


@FORMATS.register("onnx-int8")
def _onnx_int8(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """Quantized ONNX (export/int8_format.py). Its logits cannot meet fp32's 1e-4, so parity is
    reported, and accuracy on the test split is measured against the fp32 network."""
    model, shrunk = runtime_network(net, request)
    calibration = None if request.int8.dynamic else calibration_batches(net, request)
    fields = int8_format.write(
        model, tuple(net.data.input_shape), request.out, request.int8, calibration
    )
    parity = onnx_format.parity(request.out, net.model, inputs)
    parity["tolerance"] = None  # int8: reported, not enforced
    return {
        "parity": parity,
        "opset": onnx_format.OPSET,
        "accuracy": _onnx_accuracy(net, request),
        **fields,
        **shrunk,
    }


def calibration_batches(net: Deployable, request: ExportRequest) -> list:
    """Training images of the ticket's data set (or --data), for static int8's activation
    ranges; a clear error where there are none (dynamic int8 needs none)."""
    from slt_deploy.data import load_dataset
    from slt_deploy.data.base import normalise

    name = request.data or net.source.get("data") or net.data.name
    try:
        split = load_dataset(name, request.data_dir or net.source.get("data_dir"))
    except SltError as exc:
        raise SltError(
            f"static int8 calibrates on training images and {exc}; pass --data/--data-dir, "
            "or --int8-activations dynamic"
        ) from None
    if tuple(split.spec.input_shape) != tuple(net.data.input_shape):
        raise SltError(f"{name} images are not the {tuple(net.data.input_shape)} this ticket takes")
    images = normalise(split.train_x, net.data)
    return int8_format.calibration_batches(images, request.int8.calibration_samples)


def _onnx_accuracy(net: Deployable, request: ExportRequest) -> dict:
    """Test accuracy of the written ONNX (ONNX Runtime) and of the fp32 PyTorch network."""
    from slt_deploy.data import load_dataset
    from slt_deploy.data.base import normalise

    name = request.data or net.source.get("data") or net.data.name
    try:
        split = load_dataset(name, request.data_dir or net.source.get("data_dir"))
    except SltError as exc:
        return {"accuracy_change": None, "why": str(exc)}
    sess = onnx_format.session(request.out)
    x, y = normalise(split.test_x, net.data), split.test_y.numpy()
    got, expected = [], []
    with torch.no_grad():
        for batch in x.split(1024):
            feed = {onnx_format.INPUT_NAME: batch.numpy()}
            got.append(sess.run([onnx_format.OUTPUT_NAME], feed)[0].argmax(1))
            expected.append(net.model(batch).argmax(1).numpy())
    ours, theirs = np.concatenate(got), np.concatenate(expected)
    return {
        "fp32": float((theirs == y).mean()),
        "artifact": float((ours == y).mean()),
        "accuracy_change": float((ours == y).mean() - (theirs == y).mean()),
        "same_predictions": float((ours == theirs).mean()),
        "samples": len(y),
        "data": f"{name} test split",
    }


@FORMATS.register("csr")
def _csr(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    csr_format.write(net, request.out)
    model, _, _ = csr_format.load(request.out)
    with torch.no_grad():
        got, expected = model(inputs), net.model(inputs)
    parity = {
        "runtime": "torch.sparse (CSR)",
        "samples": len(inputs),
        "max_abs_diff": float((got - expected).abs().max()),
        "max_abs_logit": float(expected.abs().max()),
        "same_predictions": float((got.argmax(1) == expected.argmax(1)).float().mean()),
    }
    return {"parity": _check_parity(parity, request.out, "the CSR runtime"), "index_dtype": "int32"}


@FORMATS.register("slt")
def _slt(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    slt_format.write(net, request.out)
    again = slt_format.read(request.out)
    with torch.no_grad():
        diff = float((again.model(inputs) - net.model(inputs)).abs().max())
    same = all(torch.equal(again.masks[k], net.masks[k]) for k in net.masks)
    if not same or diff > 0.0:
        raise SltError(f"{request.out}: the rebuilt network differs from the ticket's ({diff:.2e})")
    return {
        "parity": {
            "runtime": "rebuilt from seed + masks",
            "samples": len(inputs),
            "max_abs_diff": diff,
            "masks_identical": same,
        },
        "bits_per_weight": 8 * request.out.stat().st_size / max(1, net.totals()[0]),
    }


@FORMATS.register("2:4")
def _semi_structured(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """Dense ONNX with the 2:4 zeros folded in (what ONNX Runtime and TensorRT's parser
    consume; TensorRT compresses it itself under its sparse-weights flag). The size of the
    compressed form is reported. The pattern is verified layer by layer; a projection's
    accuracy change is measured on the test split."""
    structured = {n: is_24(m) for n, m in net.masks.items() if supports_24(tuple(m.shape))}
    broken = [n for n, ok in structured.items() if not ok]
    if broken:  # only an .slt source can get here: it holds no gate values to project with
        raise SltError(
            f"masks are not 2:4 in {', '.join(broken)}; export --format 2:4 from "
            "the run directory, whose gate values allow a projection"
        )
    fields = _onnx(net, request, inputs)
    compressed = sum(
        compressed_24_bytes(net.model.get_submodule(name).weight.detach())
        for name in sorted(structured)
    )
    projection: dict = {"projected_layers": net.source.get("projected_to_24", [])}
    if projection["projected_layers"]:
        before = load_deployable(request.source, request.threshold, request.sparsity)
        projection.update(_accuracy_change(before, net, request))
    return {
        **fields,
        "pattern_24_layers": sorted(structured),
        "dense_layers": sorted(n for n in net.masks if n not in structured),
        "compressed_24_bytes": compressed,
        "projection": projection,
    }


@FORMATS.register("trt")
def _trt(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """A TensorRT engine (fp16 by default; sparse weights on for 2:4 masks). The parity
    tolerance is fp16's, so it is reported rather than enforced at 1e-4."""
    from slt_deploy.export import trt_format

    options = request.trt or trt_format.BuildOptions()
    if options.sparse is None:
        structured = [is_24(m) for m in net.masks.values() if supports_24(tuple(m.shape))]
        options = replace(options, sparse=bool(structured) and all(structured))
    model, shrunk = runtime_network(net, request)
    calibration = calibration_batches(net, request) if options.int8 else None
    return {**trt_format.write(net, model, request.out, inputs, options, calibration), **shrunk}


def _accuracy_change(before: Deployable, after: Deployable, request: ExportRequest) -> dict:
    from slt_deploy.data import load_dataset
    from slt_deploy.data.base import normalise

    name = request.data or before.source.get("data") or before.data.name
    try:
        split = load_dataset(name, request.data_dir or before.source.get("data_dir"))
    except SltError as exc:
        return {"accuracy_change": None, "why": str(exc)}
    x = normalise(split.test_x, before.data)
    with torch.no_grad():
        acc = [
            float((net.model(x).argmax(1) == split.test_y).float().mean())
            for net in (before, after)
        ]
    return {
        "accuracy_before": acc[0],
        "accuracy_after": acc[1],
        "accuracy_change": acc[1] - acc[0],
        "samples": len(split.test_y),
    }


def load_deployable(
    source: str | Path,
    threshold: float | None = None,
    sparsity: float | None = None,
    pattern_24: bool = False,
) -> Deployable:
    """A run directory, a ticket (.safetensors) or an .slt file; `pattern_24` projects a
    ticket's mask to 2:4 where it is not."""
    from slt_deploy.search.ticket import load_ticket

    source = Path(source)
    if source.is_file() and source.suffix == ".slt":
        if threshold is not None or sparsity is not None:
            raise SltError("an .slt ticket holds binary masks already: no --threshold/--sparsity")
        return slt_format.read(source)
    return from_ticket(load_ticket(source), threshold, sparsity, pattern_24)


def parity_inputs(
    net: Deployable, data: str | None, data_dir: str | None
) -> tuple[torch.Tensor, str]:
    """Real test inputs of the ticket's data set (or of --data/--data-dir); the report says
    which. Random inputs only when no data set can be read, and the report says so too."""
    from slt_deploy.data import load_dataset
    from slt_deploy.data.base import normalise

    name = data or net.source.get("data") or net.data.name
    directory = data_dir or net.source.get("data_dir")
    try:
        split = load_dataset(name, directory)
        if tuple(split.spec.input_shape) != tuple(net.data.input_shape):
            raise SltError("input shape differs")
        return normalise(split.test_x[:PARITY_SAMPLES], net.data), f"{name} test split"
    except SltError:
        generator = torch.Generator().manual_seed(0)
        shape = (PARITY_SAMPLES, *net.data.input_shape)
        return torch.randn(shape, generator=generator), "random normal (data set not found)"


def export(
    source: str | Path,
    fmt: str,
    out: str | Path,
    threshold: float | None = None,
    sparsity: float | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    trt_options: object | None = None,
    shrink: bool = True,
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE,
    int8_options: int8_format.Int8Options | None = None,
    target: TargetProfile | None = None,
) -> dict:
    """`target`: the profile behind these settings; its sparsity pattern is applied (2:4
    projected, channel required) and it is recorded in the report."""
    writer = FORMATS.get(fmt)
    int8_options = int8_options or int8_format.Int8Options()
    int8_options.validate()
    if fmt == "trt":
        from slt_deploy.export.trt_format import import_tensorrt

        import_tensorrt()  # fail before any work when TensorRT or a GPU is missing
    if channel_multiple < 1:
        raise SltError("--channel-multiple must be >= 1")
    request = ExportRequest(
        Path(source),
        fmt,
        Path(out),
        threshold,
        sparsity,
        data,
        data_dir,
        trt_options,
        shrink,
        channel_multiple,
        int8_options,
    )
    wants_24 = fmt == "2:4" or (target is not None and target.sparsity == "2:4")
    net = load_deployable(source, threshold, sparsity, pattern_24=wants_24)
    if target is not None and target.sparsity == "channel" and not net.channel_ticket:
        raise SltError(
            f"target {target.name} runs channel tickets (shrunk, dense kernels); search with "
            "--granularity channel"
        )
    inputs, described = parity_inputs(net, data, data_dir)
    fields = writer(net, request, inputs)
    parity = fields.pop("parity")
    parity["inputs"] = described
    # where the network came from, so `bench --backend torch` can rebuild it from this file
    fields["source_path"] = str(source)
    fields["mask_options"] = {"threshold": threshold, "sparsity": sparsity}
    if target is not None:
        fields["target"] = target.to_dict()
    return write_report(request.out, fmt, net, parity, fields)
