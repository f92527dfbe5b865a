"""The project's sparse runtime: CSR layers executed by torch.sparse kernels (CPU and CUDA).

Linear: y = (W_csr @ xᵀ)ᵀ. Conv2d: unfold the input into columns (im2col) and multiply by the
CSR weight; memory grows with the columns, which is the price of using a library kernel
rather than a hand-written sparse convolution. Indices are int32: measured 4x faster than
int64 in torch's CPU CSR matmul here, and half the bytes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from slt_deploy.errors import SltError


def csr_from_dense(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch calls CSR "beta"; we test what we use
        csr = weight.reshape(weight.shape[0], -1).to_sparse_csr()
    return {
        "crow_indices": csr.crow_indices().to(torch.int32),
        "col_indices": csr.col_indices().to(torch.int32),
        "values": csr.values().contiguous(),
    }


def csr_tensor(parts: dict[str, torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor from untrusted parts: the invariants are checked (a malformed CSR tensor
    can crash torch's kernels, so this is a security check, not a nicety)."""
    crow, col, values = parts["crow_indices"], parts["col_indices"], parts["values"]
    if crow.dtype != torch.int32 or col.dtype != torch.int32 or values.dtype != torch.float32:
        raise SltError("CSR tensors must be int32 indices and float32 values")
    if crow.dim() != 1 or col.dim() != 1 or values.dim() != 1 or len(col) != len(values):
        raise SltError("malformed CSR tensor (shapes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=True)
    except RuntimeError as exc:
        raise SltError(f"malformed CSR tensor: {exc}") from None


class _SparseLayer(nn.Module):
    """Sparse tensors are plain attributes (nn.Module.to would not move CSR weights)."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def to_device(self, device: torch.device | str) -> _SparseLayer:
        self.weight = self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        return self


class SparseLinear(_SparseLayer):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = weight  # sparse CSR [out, in]
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.weight @ x.reshape(-1, x.shape[-1]).T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


class SparseConv2d(_SparseLayer):
    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        kernel_size: tuple,
        stride: tuple,
        padding: tuple,
        dilation: tuple,
    ) -> None:
        super().__init__()
        self.weight = weight  # sparse CSR [out, in·kh·kw]
        self.bias = bias
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.dilation = padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        out_h = (
            h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1
        ) // self.stride[0] + 1
        out_w = (
            w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1
        ) // self.stride[1] + 1
        flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [in·k·k, n·L]
        y = (self.weight @ flat).reshape(-1, n, out_h * out_w).transpose(0, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1)
        return y.reshape(n, -1, out_h, out_w)


def sparse_layer(
    dense: nn.Module, parts: dict[str, torch.Tensor], bias: torch.Tensor | None
) -> nn.Module:
    """The sparse twin of a plain Linear/Conv2d (whose shape and hyper-parameters it takes)."""
    out_features = dense.weight.shape[0]
    weight = csr_tensor(parts, (out_features, dense.weight[0].numel()))
    if isinstance(dense, nn.Linear):
        return SparseLinear(weight, bias)
    if dense.groups != 1:
        raise SltError("grouped convolutions have no CSR runtime")
    return SparseConv2d(
        weight, bias, dense.kernel_size, dense.stride, dense.padding, dense.dilation
    )


def sparsify_(model: nn.Module, names: list[str]) -> nn.Module:
    """Swap the named plain Linear/Conv2d layers of a folded network for their CSR twins."""
    for name in names:
        dense = model.get_submodule(name)
        bias = None if dense.bias is None else dense.bias.detach()
        parts = csr_from_dense(dense.weight.detach())
        model.set_submodule(name, sparse_layer(dense, parts, bias))
    return model


def move_sparse_(model: nn.Module, device: torch.device | str) -> nn.Module:
    model.to(device)
    for module in model.modules():
        if isinstance(module, _SparseLayer):
            module.to_device(device)
    return model
