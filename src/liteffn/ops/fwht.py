"""Fast Walsh-Hadamard transform (natural order): reference, native kernel and autograd op.

``fwht(x, scale)`` returns ``scale * (x @ H_n)`` over the last dimension, ``n`` a power of two.
``H_n`` is symmetric, so the transform is its own transpose and its backward is ``fwht`` again.
"""

from __future__ import annotations

import torch

from liteffn import ops
from liteffn.ops._check import check_f32, threads

__all__ = ["fwht", "fwht_native_", "fwht_reference"]


def _check_n(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise ValueError(f"fwht: last dimension must be a power of two, got {n}")


def fwht_reference(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Pure-PyTorch FWHT of the last dimension; the specification the kernel must match."""
    n = x.shape[-1]
    _check_n(n)
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        pairs = y.reshape(-1, n // (2 * h), 2, h)  # (rows, blocks, {a, b}, h)
        a, b = pairs[:, :, 0, :], pairs[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2).reshape(-1, n)  # (rows, n)
        h *= 2
    return (y * scale).reshape(x.shape)


def fwht_native_(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """In-place native FWHT of a contiguous float32 CPU tensor (..., n); returns ``x``."""
    check_f32("fwht: x", x)
    n = x.shape[-1] if x.dim() else 0
    _check_n(n)
    ops.native().fwht_rows(x.data_ptr(), x.numel() // n, n, float(scale), threads())
    return x


@torch.library.custom_op("liteffn::fwht", mutates_args=())
def _fwht_op(x: torch.Tensor, scale: float) -> torch.Tensor:
    if ops.native_available() and x.dtype == torch.float32:
        return fwht_native_(x.contiguous().clone(), scale)
    return fwht_reference(x, scale)


@_fwht_op.register_fake
def _(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)


def _fwht_backward(ctx, grad: torch.Tensor):
    return _fwht_op(grad, ctx.scale), None


def _fwht_setup(ctx, inputs, output) -> None:
    ctx.scale = inputs[1]


_fwht_op.register_autograd(_fwht_backward, setup_context=_fwht_setup)


def fwht(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Differentiable FWHT of the last dimension (a power of two), scaled by ``scale``.

    Uses the native kernel for float32 CPU tensors when it is built, else the reference.

    Example:
        >>> y = fwht(torch.randn(4, 8), scale=8 ** -0.5)  # orthonormal transform
    """
    _check_n(x.shape[-1] if x.dim() else 0)
    return _fwht_op(x, float(scale))
