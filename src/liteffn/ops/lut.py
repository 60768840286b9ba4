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

__all__ = [
    "lut_efd_input_grad",
    "lut_efd_input_grad_by_lut",
    "lut_efd_weights",
    "lut_forward",
    "lut_model",
    "lut_table_grad",
    "lut_train_forward",
]


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


def lut_train_forward(
    bits: torch.Tensor, mapping: torch.Tensor, table: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Native hard forward of a LUT layer (float32); see ``LUTLayer`` and kernels/lut_train.h.

    bits (N, in) float32 (an entry != 0 is a 1), mapping (out, n) int64, table (out, 2^n)
    float32 -> (addr (N, out) uint8 with ``addr[t, j] = sum_l bit(t, mapping[j, l]) << l``,
    y (N, out) float32 ``[table[j, addr[t, j]] > 0]``).
    """
    check_f32("lut_train_forward: bits", bits)
    if bits.dim() != 2:
        raise ValueError(
            f"lut_train_forward: bits: expected shape (N, in), got {tuple(bits.shape)}"
        )
    n_tok, in_features = bits.shape
    check_tensor("lut_train_forward: mapping", mapping, torch.int64)
    if mapping.dim() != 2 or not 1 <= mapping.shape[1] <= 6 or mapping.shape[0] < 1:
        raise ValueError(
            f"lut_train_forward: mapping: expected shape (out, n) with out >= 1, 1 <= n <= 6, "
            f"got {tuple(mapping.shape)}"
        )
    out, n = mapping.shape
    check_f32("lut_train_forward: table", table, (out, 1 << n))
    addr = torch.empty(n_tok, out, dtype=torch.uint8)
    y = torch.empty(n_tok, out, dtype=torch.float32)
    ops.native().lut_train_forward(
        bits.data_ptr(), mapping.data_ptr(), table.data_ptr(), addr.data_ptr(), y.data_ptr(),
        n_tok, out, n, in_features, threads(),
    )  # fmt: skip
    return addr, y


def lut_table_grad(grad: torch.Tensor, addr: torch.Tensor, size: int) -> torch.Tensor:
    """Native straight-through table gradient of a LUT layer (float32), deterministic.

    grad (N, out) float32, addr (N, out) uint8 -> (out, size) float32 with
    ``grad_table[j, addr[t, j]] += grad[t, j]`` summed in increasing ``t``.
    """
    check_f32("lut_table_grad: grad", grad)
    if grad.dim() != 2 or grad.shape[1] < 1:
        raise ValueError(f"lut_table_grad: grad: expected shape (N, out), got {tuple(grad.shape)}")
    n_tok, out = grad.shape
    check_tensor("lut_table_grad: addr", addr, torch.uint8, (n_tok, out))
    n = size.bit_length() - 1
    if size < 2 or size != 1 << n or n > 8:
        raise ValueError(f"lut_table_grad: size: expected a power of two in [2, 256], got {size}")
    grad_table = torch.empty(out, size, dtype=torch.float32)
    ops.native().lut_table_grad(
        grad.data_ptr(), addr.data_ptr(), grad_table.data_ptr(), n_tok, out, n, threads()
    )
    return grad_table


def lut_efd_weights(table: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Native EFD weights of LUT tables, LUT-major: (out, 2^n) float32 -> (out, 2^n, n).

    ``weights[j, a, l]`` equals ``layers.lut.efd_weights(table)[l, j, a]`` (the same separable
    smoothing and differencing, in the same order); this is the layout the native input
    gradient reads.
    """
    check_f32("lut_efd_weights: table", table)
    size = table.shape[1] if table.dim() == 2 else 0
    n = size.bit_length() - 1
    if table.dim() != 2 or table.shape[0] < 1 or size < 2 or size != 1 << n or n > 8:
        raise ValueError(
            f"lut_efd_weights: table: expected shape (out, 2^n) with out >= 1, 1 <= n <= 8, "
            f"got {tuple(table.shape)}"
        )
    out = table.shape[0]
    weights = torch.empty(out, size, n, dtype=torch.float32)
    ops.native().lut_efd_weights(
        table.data_ptr(), weights.data_ptr(), out, n, alpha, beta, threads()
    )
    return weights


def lut_efd_input_grad_by_lut(
    grad: torch.Tensor,
    addr: torch.Tensor,
    by_lut: torch.Tensor,
    mapping: torch.Tensor,
    in_features: int,
) -> torch.Tensor:
    """``lut_efd_input_grad`` with LUT-major weights (out, 2^n, n) from ``lut_efd_weights``."""
    n_tok, out = grad.shape
    n = mapping.shape[1] if mapping.dim() == 2 else 0
    check_f32("lut_efd_input_grad: grad", grad, (n_tok, out))
    check_tensor("lut_efd_input_grad: addr", addr, torch.uint8, (n_tok, out))
    check_f32("lut_efd_input_grad: weights", by_lut, (out, 1 << n, n))
    check_tensor("lut_efd_input_grad: mapping", mapping, torch.int64, (out, n))
    grad_bits = torch.empty(n_tok, in_features, dtype=torch.float32)
    ops.native().lut_efd_input_grad(
        grad.data_ptr(), addr.data_ptr(), by_lut.data_ptr(), mapping.data_ptr(),
        grad_bits.data_ptr(), n_tok, out, n, in_features, threads(),
    )  # fmt: skip
    return grad_bits
