"""`.slt`: the compact ticket. Seed, init and model spec, bit-packed masks, BN statistics and
biases, as safetensors inside an LZMA stream: about one bit per weight before compression
(a 90%-sparse mask compresses to ~0.5 bit). Every other format can be rebuilt from it."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from slt_deploy.atomic import write_bytes
from slt_deploy.data.base import DataSpec
from slt_deploy.errors import SltError
from slt_deploy.export.network import Deployable, rebuild
from slt_deploy.export.request import ExportRequest
from slt_deploy.headers import METADATA_KEY, check_header
from slt_deploy.init import InitSpec
from slt_deploy.models import ModelSpec

SLT_FORMAT = "slt-deploy/slt"
SLT_VERSION = 1
MAX_UNPACKED = 2 << 30  # refuse decompression bombs: 2 GiB of unpacked payload at most
MASK_SUFFIX = ".mask_bits"


def encode(net: Deployable) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    shapes = {}
    for name, mask in sorted(net.masks.items()):
        bits = np.packbits(mask.numpy().astype(np.uint8).reshape(-1))
        tensors[name + MASK_SUFFIX] = torch.from_numpy(bits)
        shapes[name] = list(mask.shape)
    for name, tensor in sorted(net.extra_tensors().items()):
        tensors["extra." + name] = tensor.cpu().contiguous()
    meta = {
        "format": SLT_FORMAT,
        "version": SLT_VERSION,
        "model": net.model_spec.to_dict(),
        "init": net.init.to_dict(),
        "data": net.data.to_dict(),
        "mask_shapes": shapes,
        "affine_bn": net.affine_bn,
        "source": net.source,
    }
    payload = save_safetensors(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def write(net: Deployable, request: ExportRequest, inputs: torch.Tensor) -> dict:
    """`slt`: written, read back and rebuilt from the seed; the rebuilt network must equal the
    ticket's bit for bit."""
    write_bytes(request.out, encode(net))
    again = read(request.out)
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


def _decompress(raw: bytes, path: Path) -> bytes:
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        payload = decompressor.decompress(raw, max_length=MAX_UNPACKED)
    except lzma.LZMAError as exc:
        raise SltError(f"{path} is not an .slt ticket (not an xz stream: {exc})") from None
    if not decompressor.eof:
        raise SltError(f"{path}: truncated .slt ticket (or larger than {MAX_UNPACKED} bytes)")
    if decompressor.unused_data:
        raise SltError(f"{path}: damaged .slt ticket (bytes after the end of its stream)")
    return payload


def read(path: str | Path) -> Deployable:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SltError(f"cannot read {path}: {exc.strerror or exc}") from None
    payload = _decompress(raw, path)
    meta = _metadata(payload, path)
    try:
        tensors = load_safetensors(payload)
    except (SafetensorError, ValueError) as exc:
        raise SltError(f"{path}: damaged .slt payload ({exc})") from None
    try:
        data = DataSpec.from_dict(meta["data"])
        spec = ModelSpec.from_dict(meta["model"])
        init = InitSpec.from_dict(meta["init"])
        shapes = {k: tuple(int(d) for d in v) for k, v in meta["mask_shapes"].items()}
        affine_bn = bool(meta.get("affine_bn", False))
        source = dict(meta.get("source", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise SltError(f"{path}: .slt metadata is incomplete ({exc})") from None
    masks = {}
    for name, shape in shapes.items():
        bits = tensors.get(name + MASK_SUFFIX)
        count = int(np.prod(shape))
        if bits is None or bits.dtype != torch.uint8 or bits.numel() != (count + 7) // 8:
            raise SltError(f"{path}: mask {name!r} is missing or has the wrong size")
        unpacked = np.unpackbits(bits.numpy(), count=count).astype(bool)
        masks[name] = torch.from_numpy(unpacked.reshape(shape))
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return rebuild(spec, data, init, masks, extra, affine_bn, source)


def _metadata(payload: bytes, path: Path) -> dict:
    """The header of the safetensors payload (8-byte little-endian length, then JSON)."""
    if len(payload) < 8:
        raise SltError(f"{path}: damaged .slt payload")
    size = int.from_bytes(payload[:8], "little")
    try:
        raw = json.loads(payload[8 : 8 + size])["__metadata__"][METADATA_KEY]
    except (ValueError, KeyError, TypeError):
        raw = None
    return check_header(raw, path, SLT_FORMAT, SLT_VERSION, ".slt ticket")
