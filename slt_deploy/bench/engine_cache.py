"""TensorRT engines built by `bench` from an ONNX, cached so a repeated bench does not
rebuild them. The key is everything an engine depends on: the ONNX bytes, the GPU (name and
compute capability), the platform, the TensorRT version and the build options."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from slt_deploy.atomic import write_bytes
from slt_deploy.errors import SltError


def cache_dir(override: str | None = None) -> Path:
    root = override or os.environ.get("SLT_DEPLOY_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "slt-deploy"
    path = base / "engines"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SltError(f"cannot create the engine cache {path}: {exc.strerror}") from None
    return path


def cache_key(onnx_bytes: bytes, device: dict, options: dict) -> str:
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(onnx_bytes).digest())
    digest.update(json.dumps({"device": device, "options": options}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def lookup(directory: Path, key: str) -> bytes | None:
    path = directory / f"{key}.engine"
    return path.read_bytes() if path.is_file() else None


def store(directory: Path, key: str, engine: bytes, record: dict) -> None:
    write_bytes(directory / f"{key}.engine", engine)
    write_bytes(directory / f"{key}.json", json.dumps(record, sort_keys=True).encode())


def engine_for(artifact, options, report: dict) -> tuple[bytes, tuple[int, ...], str]:
    """(engine bytes, input shape, a note saying whether it was built or found in the cache).

    fp16 needs the casts in the graph (strongly typed networks), so when the export report
    names a ticket that exists here the fp16 ONNX is rebuilt from it, exactly as `export
    --format trt` does; otherwise the ONNX file is built as it is (fp32)."""
    from dataclasses import asdict

    from slt_deploy.bench.artifacts import deployable, runtime_model
    from slt_deploy.export import trt_format

    trt = trt_format.import_tensorrt()
    sparse = options.sparse_engine
    if sparse is None:
        sparse = report.get("format") == "2:4"
    build = trt_format.BuildOptions(fp16=options.precision == "fp16", sparse=sparse)
    try:
        net = deployable(artifact)
        input_shape = tuple(net.data.input_shape)
        model = runtime_model(artifact, net)  # a shrunk channel ticket stays shrunk
        onnx_bytes, _ = trt_format.network_onnx(model, input_shape, build)
    except SltError:
        import onnx

        from slt_deploy.export.onnx_format import verify

        verify(artifact.path)
        model = onnx.load_model_from_string(artifact.path.read_bytes())
        dims = model.graph.input[0].type.tensor_type.shape.dim[1:]
        input_shape = tuple(int(d.dim_value) for d in dims)
        onnx_bytes = artifact.path.read_bytes()
        build = trt_format.BuildOptions(fp16=False, sparse=sparse)
    device = trt_format.device_record(trt)
    recorded = {k: str(v) for k, v in asdict(build).items()}
    key = cache_key(onnx_bytes, device, recorded)
    directory = cache_dir(options.engine_cache)
    engine = lookup(directory, key)
    if engine is not None:
        return engine, input_shape, f"engine from cache {key}"
    engine, record = trt_format.engine_from_onnx(onnx_bytes, input_shape, build)
    store(directory, key, engine, record)
    return engine, input_shape, f"engine built and cached as {key} (fp16={build.fp16})"
