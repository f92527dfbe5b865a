"""Which CPU kernel makes a 90%-sparse MLP faster than dense ONNX Runtime, at batch 1 and 32?

    python bench/cpu_kernels.py [--threads 2] [--density 0.1] [--seconds 1.5]

Every candidate runs the same masked MLP (random weights, ReLU between layers), interleaved
round by round in one process, so the ratios share the machine's load. Candidates:
  ort dense     ONNX Runtime, all graph optimisations (what `export --format onnx` runs)
  torch dense   eager PyTorch
  csr int64     torch.sparse CSR with int64 indices (torch's default)
  csr int32     torch.sparse CSR with int32 indices (what `export --format csr` stores)
  scipy csr     scipy.sparse CSR (int32 indices, single-threaded)
  bsr 4x4/8x8   torch.sparse BSR (MKL) on a block-structured mask of the same density
Masks: unstructured for dense/CSR/scipy; for BSR, whole 4x4 or 8x8 blocks kept at the same
density (a mask a block-gate search would produce; its accuracy is a separate question).
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
import warnings

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
import torch

warnings.simplefilter("ignore")  # torch calls its sparse layouts beta

SHAPES = {"784-1024-1024-10": (784, 1024, 1024, 10), "784-4096-4096-10": (784, 4096, 4096, 10)}


def masked_weights(widths, density, block, generator):
    out = []
    for fan_in, fan_out in itertools.pairwise(widths):
        w = torch.randn(fan_out, fan_in, generator=generator)
        if block == 1 or fan_out % block or fan_in % block:
            keep = torch.rand(fan_out, fan_in, generator=generator) < density
        else:
            cells = torch.rand(fan_out // block, fan_in // block, generator=generator) < density
            keep = cells.repeat_interleave(block, 0).repeat_interleave(block, 1)
        out.append(w * keep)
    return out


def onnx_session(weights, threads):
    layers = []
    for w in weights:
        linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        linear.weight.data = w
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).eval()
    buffer = io.BytesIO()
    example = torch.randn(1, weights[0].shape[1])
    axes = {"x": {0: "b"}}
    torch.onnx.export(
        model, example, buffer, dynamo=False, input_names=["x"], dynamic_axes=axes, opset_version=17
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return model, session


def torch_chain(mats):
    def run(xt):  # xt: [in, batch]
        for i, m in enumerate(mats):
            xt = m @ xt
            if i < len(mats) - 1:
                xt = torch.relu(xt)
        return xt

    return run


def scipy_chain(mats):
    def run(xt):
        for i, m in enumerate(mats):
            xt = m @ xt
            if i < len(mats) - 1:
                np.maximum(xt, 0, out=xt)
        return xt

    return run


def csr(w, index_dtype):
    c = w.to_sparse_csr()
    return torch.sparse_csr_tensor(
        c.crow_indices().to(index_dtype), c.col_indices().to(index_dtype), c.values(), c.shape
    )


def candidates(widths, density, threads, batch):
    g = torch.Generator().manual_seed(0)
    unstructured = masked_weights(widths, density, 1, g)
    model, session = onnx_session(unstructured, threads)
    x = torch.randn(batch, widths[0], generator=g)
    xt, xn, xs = x.T.contiguous(), x.numpy(), x.T.numpy().copy()
    fns = {
        "ort dense": lambda: session.run(None, {"x": xn}),
        "torch dense": lambda: model(x),
        "csr int64": (lambda f: lambda: f(xt))(
            torch_chain([csr(w, torch.int64) for w in unstructured])
        ),
        "csr int32": (lambda f: lambda: f(xt))(
            torch_chain([csr(w, torch.int32) for w in unstructured])
        ),
        "scipy csr": (lambda f: lambda: f(xs.copy()))(
            scipy_chain([sp.csr_matrix(w.numpy()) for w in unstructured])
        ),
    }
    for block in (4, 8):
        blocked = masked_weights(widths, density, block, g)
        mats = [w.to_sparse_bsr((block, block)) if w.shape[0] % block == 0 else w for w in blocked]
        fns[f"bsr {block}x{block}"] = (lambda f: lambda: f(xt))(torch_chain(mats))
    return fns


def measure(fns, seconds, chunk=0.05):
    times = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():  # warm-up
            for _ in range(3):
                fn()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds * len(fns):
            for name, fn in fns.items():
                until = time.perf_counter() + chunk
                while time.perf_counter() < until:
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) * 1e3 for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per candidate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, density {args.density}; median latency ms (ratio vs ort dense)")
    for label, widths in SHAPES.items():
        for batch in (1, 32):
            result = measure(candidates(widths, args.density, args.threads, batch), args.seconds)
            base = result["ort dense"]
            cells = "  ".join(f"{k} {v:.3f} ({v / base:.2f})" for k, v in result.items())
            print(f"{label} batch {batch:>2}: {cells}")


if __name__ == "__main__":
    main()
