"""The whole-sequence matrix products of a layer, on oneDNN where torch has it and MKL is slower.

A layer's input projection, its input gradient and its weight gradients are one large product
each over all N rows. torch multiplies float32 matrices on MKL, which on the AMD machines here runs
its AVX2 code (about 210 GFLOP/s on 2 cores); oneDNN, the library under torch.nn.LSTM, runs the same
products with AVX-512 at 2-2.3x that rate (measured, 2 cores: (6400 x 256) @ (256 x 1024) 16.0 ms on
MKL, 7.0 ms on oneDNN; the weight gradient's (1024 x 6400) @ (6400 x 256) 16.4 ms against 8.8 ms).
torch reaches oneDNN's product for dense float32 tensors through its ``mkldnn::_linear_pointwise``
operator (the one TorchInductor's CPU code calls); where that operator is missing or fails a
first check against ``torch.matmul``, and for other dtypes or devices, ``torch.matmul`` runs.
On Intel processors, where MKL takes its AVX-512 code, ``torch.matmul`` runs always: it was the
faster there or as fast (``mkl``).

Shapes: x (N, K), weight (M, K), d (N, M).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from . import mkl


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T (+ bias) by oneDNN's product."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def _onednn_available() -> bool:
    """Whether ``mkldnn::_linear_pointwise`` exists and multiplies as ``torch.matmul`` does."""
    try:
        generator = torch.Generator().manual_seed(0)
        x, weight = (torch.randn(size, generator=generator) for size in ((37, 19), (23, 19)))
        bias = torch.randn(23, generator=generator)
        result = _onednn(x.t().contiguous().t(), weight, bias)
        return bool(torch.allclose(result, torch.addmm(bias, x, weight.t()), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


# Below this many multiply-adds oneDNN's fixed cost per call outweighs its rate (measured:
# (100 x 32) @ (32 x 128), 4e5, 12.5 µs on MKL against 19.7 on oneDNN; (200 x 64) @ (64 x 256),
# 3.3e6, 43 against 32 µs). The weight gradient pays a copy of its transposed input besides
# (1.3e6: 25 µs on MKL, 40 on oneDNN; 1e7: 124 against 104 µs), so it starts higher.
MIN_ONEDNN_WORK = 2**20
MIN_ONEDNN_GRADIENT_WORK = 2**22
# On Intel processors torch's own matmul (MKL) was the faster (``mkl``): oneDNN is for the others.
ONEDNN_PRODUCTS = not mkl.preferred()


def _onednn_takes(tensors: tuple[Tensor, ...], work: int, least: int) -> bool:
    """Whether a product of ``work`` multiply-adds on ``tensors`` runs on oneDNN: float32 CPU
    tensors, ``least`` multiply-adds or more."""
    return (
        ONEDNN_PRODUCTS
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and work >= least
        and _onednn_available()
    )


def _on_onednn(x: Tensor, weight: Tensor, least: int) -> bool:
    """Whether x @ weight.T runs on oneDNN (``_onednn_takes``)."""
    return _onednn_takes((x, weight), x.shape[0] * x.shape[1] * weight.shape[0], least)


def reads_transposed(like: Tensor, rows: int, inputs: int, outputs: int) -> bool:
    """Whether ``weight_gradient`` of d (rows, outputs) by x (rows, inputs), tensors like
    ``like``, multiplies on oneDNN, which takes x as x.T (inputs, rows) C-contiguous: an x that is
    the transposed view of such a tensor costs no copy there. Elsewhere x's layout is free."""
    return _onednn_takes((like,), rows * inputs * outputs, MIN_ONEDNN_GRADIENT_WORK)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T (+ bias): (N, K), (M, K), (M,) -> (N, M)."""
    if _on_onednn(x, weight, MIN_ONEDNN_WORK):
        return _onednn(x, weight, bias)
    return x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())


def times(d: Tensor, weight: Tensor) -> Tensor:
    """d @ weight, the input gradient of ``linear``: (N, M), (M, K) -> (N, K)."""
    return linear(d, weight.t())


def weight_gradient(d: Tensor, x: Tensor) -> Tensor:
    """d.T @ x summed over the N rows, the weight gradient of ``linear``: (N, M), (N, K) -> (M, K).

    On oneDNN as the transposed product x.T @ d, returned as a transposed view: oneDNN reads
    the rows' transposes in that order at about twice the rate of the other (measured). It
    copies x.T first unless x is the transposed view of a C-contiguous (K, N) tensor
    (``reads_transposed``).
    """
    if _on_onednn(x.t(), d.t(), MIN_ONEDNN_GRADIENT_WORK):
        return _onednn(x.t(), d.t()).t()
    return d.t() @ x
