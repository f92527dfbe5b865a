"""Portable frozen weights: the same (seed, layer name) gives the same bits on every machine.

torch's samplers may change between releases and devices, so weights come from numpy's
Philox counter-based generator read as *raw* 64-bit words (the Philox4x64-10 stream is
fixed by its algorithm), turned into numbers with explicit arithmetic here (docs/design.md,
"Weights"). A SHA-256 over the regenerated weights goes into every ticket.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from slt_deploy.registry import Registry

RELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class InitSpec:
    """How frozen weights are drawn: std = gain / √(fan_in · density).

    `density` < 1 is edge-popup's `scale_fan`: a mask that keeps a fraction k of the inputs
    shrinks each layer's output by √k, and without biases that compounds into tiny logits
    and vanishing gradients; scaling by 1/√k keeps activations at unit scale.
    """

    scheme: str = "signed-constant"
    seed: int = 0
    gain: float = RELU_GAIN
    density: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InitSpec:
        return cls(
            scheme=str(data["scheme"]),
            seed=int(data["seed"]),
            gain=float(data["gain"]),
            density=float(data.get("density", 1.0)),
        )


Scheme = Callable[[np.ndarray, float], np.ndarray]
SCHEMES: Registry[Scheme] = Registry("init scheme")


def uniform01(seed: int, name: str, count: int) -> np.ndarray:
    """`count` float64 numbers in [0, 1) from the Philox stream keyed by (seed, name)."""
    digest = hashlib.sha256(f"slt-deploy/{seed}/{name}".encode()).digest()
    key = int.from_bytes(digest[:16], "little")
    raw = np.random.Philox(key=key).random_raw(count)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)  # 53 bits


@SCHEMES.register("uniform")
def _uniform(u: np.ndarray, std: float) -> np.ndarray:
    # U[-a, a] with a = √3·std, i.e. Kaiming-uniform: the paper's scheme.
    a = math.sqrt(3.0) * std
    return (2.0 * u - 1.0) * a


@SCHEMES.register("signed-constant")
def _signed_constant(u: np.ndarray, std: float) -> np.ndarray:
    # ±std, each sign with probability 1/2: edge-popup's best scheme.
    return np.where(u < 0.5, -std, std)


@SCHEMES.register("kaiming-normal")
def _kaiming_normal(u: np.ndarray, std: float) -> np.ndarray:
    # Box–Muller on pairs of uniforms; float64 maths, rounded once to float32 by the caller.
    n = u.size
    pairs = (n + 1) // 2
    u1 = 1.0 - u[:pairs]  # (0, 1], keeps log finite
    u2 = np.concatenate([u[pairs:], np.zeros(2 * pairs - n)])
    radius = np.sqrt(-2.0 * np.log(u1))
    normal = np.concatenate([radius * np.cos(2 * math.pi * u2), radius * np.sin(2 * math.pi * u2)])
    return normal[:n] * std


def fan_in(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def frozen_weight(spec: InitSpec, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The frozen float32 weight of layer `name`, drawn by `spec.scheme`."""
    scheme = SCHEMES.get(spec.scheme)
    std = spec.gain / math.sqrt(fan_in(shape) * spec.density)
    values = scheme(uniform01(spec.seed, name, int(np.prod(shape))), std)
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def weight_checksum(named_weights: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over (name, shape, little-endian float32 bytes) in name order."""
    digest = hashlib.sha256()
    for name, weight in sorted(named_weights, key=lambda item: item[0]):
        array = weight.detach().cpu().contiguous().numpy().astype("<f4", copy=False)
        digest.update(name.encode())
        digest.update(repr(tuple(array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
