"""LUTFFN inference kernel: pack a network once, then run it on (N, d) float32 batches.

``lut_model(...)`` checks every tensor and builds a native ``LutModel`` that owns a packed
copy: int32 mappings, each LUT's truth table as one uint64 word (bit ``a`` is
``table[a] > 0``), the thresholds and a (d, g+1) table of affine outputs, one per count.
``lut_forward(model, x)`` is the eval fast path (a few µs of Python around the kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from liteffn import ops
from liteffn.ops._check import check_f32, check_tensor, threads

__all__ = ["lut_forward", "lut_model"]


def lut_model(
    thresholds: torch.Tensor,
    affine: torch.Tensor,
    mappings: Sequence[torch.Tensor],
    tables: Sequence[torch.Tensor],
) -> Any:
    """Pack a LUTFFN for the native kernel.

    Args:
        thresholds: (d, T) float32; bit ``c*T + i`` is ``[x_c > thresholds[c, i]]``.
        affine: (d, g+1) float32; output of channel ``c`` for each count ``0..g``.
        mappings: per layer, (width_k, n) int64 input-bit indices (LSB first).
        tables: per layer, (width_k, 2^n) float32 truth tables; the last layer has d*g LUTs.
    """
    check_f32("lut_model: thresholds", thresholds)
    if thresholds.dim() != 2 or thresholds.numel() == 0:
        raise ValueError(
            f"lut_model: thresholds: expected shape (d, T) with d, T >= 1, "
            f"got {tuple(thresholds.shape)}"
        )
    d, levels = thresholds.shape
    check_f32("lut_model: affine", affine)
    if affine.dim() != 2 or affine.shape[0] != d or affine.shape[1] < 2:
        raise ValueError(
            f"lut_model: affine: expected shape ({d}, g+1) with g >= 1, got {tuple(affine.shape)}"
        )
    g = affine.shape[1] - 1
    if len(mappings) != len(tables) or not mappings:
        raise ValueError(
            f"lut_model: expected one mapping per table (>= 1 layer), got {len(mappings)} "
            f"mappings and {len(tables)} tables"
        )
    n = mappings[0].shape[1] if mappings[0].dim() == 2 else -1
    if not 1 <= n <= 6:
        raise ValueError(
            f"lut_model: mapping 0: expected shape (width, n) with 1 <= n <= 6, "
            f"got {tuple(mappings[0].shape)}"
        )
    widths, in_width = [], d * levels
    for k, (m, t) in enumerate(zip(mappings, tables, strict=True)):
        check_tensor(f"lut_model: mapping {k}", m, torch.int64)
        if m.dim() != 2 or m.shape[1] != n or m.shape[0] < 1:
            raise ValueError(
                f"lut_model: mapping {k}: expected shape (width, {n}), got {tuple(m.shape)}"
            )
        width = m.shape[0]
        check_f32(f"lut_model: table {k}", t, (width, 2**n))
        if m.min().item() < 0 or m.max().item() >= in_width:
            raise ValueError(
                f"lut_model: mapping {k}: expected indices in [0, {in_width}), got "
                f"[{m.min().item()}, {m.max().item()}]"
            )
        widths.append(width)
        in_width = width
    if widths[-1] != d * g:
        raise ValueError(
            f"lut_model: the last layer must have d*g = {d * g} LUTs, got {widths[-1]}"
        )
    return ops.native().LutModel(
        d,
        levels,
        n,
        g,
        thresholds.data_ptr(),
        affine.data_ptr(),
        widths,
        [m.data_ptr() for m in mappings],
        [t.data_ptr() for t in tables],
    )


def lut_forward(model: Any, x: torch.Tensor, d: int) -> torch.Tensor:
    """Run a packed network on ``x`` (N, d) float32 contiguous; returns a new (N, d) tensor."""
    check_f32("lut_forward: x", x)
    if x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"lut_forward: x: expected shape (N, {d}), got {tuple(x.shape)}")
    y = torch.empty_like(x)
    model.forward(x.data_ptr(), x.shape[0], y.data_ptr(), threads())
    return y


def lut_efd_input_grad(
    grad: torch.Tensor,
    addr: torch.Tensor,
    weights: torch.Tensor,
    mapping: torch.Tensor,
    in_features: int,
) -> torch.Tensor:
    """Native EFD input gradient of a LUT layer (float32); see ``LUTLayer`` and kernels/lut_efd.h.

    grad (N, out) float32, addr (N, out) uint8, weights (n, out, 2^n) float32, mapping (out, n)
    int64 -> grad_bits (N, in_features) with ``grad_bits[t, mapping[j, l]] += grad[t, j] *
    weights[l, j, addr[t, j]]``; deterministic (each token's row is summed by one thread).
    """
    n_tok, out = grad.shape
    n = mapping.shape[1] if mapping.dim() == 2 else 0
    check_f32("lut_efd_input_grad: grad", grad, (n_tok, out))
    check_tensor("lut_efd_input_grad: addr", addr, torch.uint8, (n_tok, out))
    check_f32("lut_efd_input_grad: weights", weights, (n, out, 1 << n))
    check_tensor("lut_efd_input_grad: mapping", mapping, torch.int64, (out, n))
    grad_bits = torch.empty(n_tok, in_features, dtype=torch.float32)
    by_lut = weights.permute(1, 2, 0).contiguous()  # (out, 2^n, n): a LUT's weights together
    ops.native().lut_efd_input_grad(
        grad.data_ptr(), addr.data_ptr(), by_lut.data_ptr(), mapping.data_ptr(),
        grad_bits.data_ptr(), n_tok, out, n, in_features, threads(),
    )  # fmt: skip
    return grad_bits
