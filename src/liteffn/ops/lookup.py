"""LookupFFN ops: the fused native inference forward and the gather-accumulate with autograd.

``gather_accumulate(scores, codes, tables)`` computes ``y[n] = sum_k scores[n, k] *
tables[k, codes[n, k]]``. Its backward gives ``dL/dscores[n, k] = <g[n], tables[k, codes[n, k]]>``
and the table gradient as a deterministic scatter-add of ``scores[n, k] * g[n]`` (dense, or a
sparse COO tensor over the touched rows); codes get no gradient.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from liteffn import ops
from liteffn.ops import _hugemem
from liteffn.ops._check import check_f32, check_tensor, threads

__all__ = [
    "gather_accumulate",
    "gather_reference",
    "hadamard",
    "make_forward_plan",
    "pack_bh4",
    "pack_dense",
    "pack_tables",
    "run_forward",
    "table_major_shape",
    "use_table_major_shape",
]

PACKED_GATHER_MIN = 1024  # tokens from which the training gather packs the tables first
_GATHER_CHUNK = 1024  # tokens per step of the reference gather: bounds the (chunk, h, d) rows


def gather_reference(scores: torch.Tensor, codes: torch.Tensor, tables: torch.Tensor):
    """Pure-PyTorch gather-accumulate: scores (N, h), codes (N, h) int, tables (h, 2^tau, d)."""
    h, rows, d = tables.shape
    flat = tables.reshape(h * rows, d)  # (h * rows, d)
    offset = torch.arange(h, device=codes.device) * rows  # (h,): first row of each table
    outs = []
    for s in range(0, codes.shape[0], _GATHER_CHUNK):
        idx = codes[s : s + _GATHER_CHUNK].long() + offset  # (n, h) rows of `flat`
        picked = flat[idx]  # (n, h, d)
        outs.append(torch.einsum("nh,nhd->nd", scores[s : s + _GATHER_CHUNK], picked))
    if not outs:
        return tables.new_zeros(0, d)
    return torch.cat(outs)  # (N, d)


def _check_gather(scores: torch.Tensor, codes: torch.Tensor, tables: torch.Tensor) -> None:
    if tables.dim() != 3:
        raise ValueError(f"gather: expected tables (h, 2^tau, d), got shape {tuple(tables.shape)}")
    h, rows, _ = tables.shape
    if rows < 2 or rows & (rows - 1):
        raise ValueError(f"gather: expected a power-of-two row count >= 2, got {rows}")
    n = codes.shape[0] if codes.dim() else 0
    check_tensor("gather: codes", codes, torch.int32, (n, h))
    check_tensor("gather: scores", scores, tables.dtype, (n, h))
    check_tensor("gather: tables", tables, tables.dtype)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= rows):
        lo, hi = int(codes.min()), int(codes.max())
        raise ValueError(f"gather: expected codes in [0, {rows}), got values in [{lo}, {hi}]")


_scratch = threading.local()


def _packed_scratch(h: int, nc: int, rows: int) -> torch.Tensor:
    """A per-thread reusable huge-page buffer (h, nc, rows, 64) for the packed training gather."""
    shape = (h, nc, rows, TABLE_CHUNK)
    buf = getattr(_scratch, "packed", None)
    if buf is None or tuple(buf.shape) != shape:
        buf = _hugemem.empty(shape, torch.float32)
        _scratch.packed = buf
    return buf


class _GatherAccumulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, codes, tables, sparse):
        scores, tables = scores.contiguous(), tables.contiguous()
        codes = codes.to(torch.int32).contiguous()
        _check_gather(scores, codes, tables)
        h, rows, d = tables.shape
        n = codes.shape[0]
        y = tables.new_empty(n, d)
        tau = rows.bit_length() - 1
        if tables.dtype == torch.float32 and n >= PACKED_GATHER_MIN:
            # big batch: re-lay the tables chunk-major once (h * rows * d copies) so the gather
            # reads each table from cache instead of random rows from DRAM
            packed = _packed_scratch(h, -(-d // TABLE_CHUNK), rows)
            ops.native().lookup_pack(tables.data_ptr(), h, tau, d, packed.data_ptr(), threads())
            ops.native().lookup_gather_packed(
                codes.data_ptr(), scores.data_ptr(), packed.data_ptr(), False, n, h, tau, d,
                y.data_ptr(), threads(),
            )  # fmt: skip
        else:
            ops.native().lookup_gather(
                codes.data_ptr(), scores.data_ptr(), tables.data_ptr(), n, h, tau, d,
                y.data_ptr(), tables.dtype == torch.float64, threads(),
            )  # fmt: skip
        ctx.save_for_backward(scores, codes, tables)
        ctx.sparse = sparse
        return y

    @staticmethod
    def backward(ctx, g):
        scores, codes, tables = ctx.saved_tensors
        g = g.contiguous()
        h, rows, d = tables.shape
        n = codes.shape[0]
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        grad_s = torch.empty_like(scores) if need_s else None
        grad_t, row_index, grad_rows = None, None, None
        if need_t and ctx.sparse:
            flat = codes.long() + torch.arange(h) * rows  # (n, h) row of the flattened tables
            uniq, inv = torch.unique(flat, return_inverse=True)  # sorted: table k's rows together
            grad_rows = tables.new_zeros(uniq.numel(), d)  # (U, d)
            row_index = inv.contiguous()  # (n, h) int64 into grad_rows
        elif need_t:
            grad_t = _hugemem.empty(tuple(tables.shape), tables.dtype)  # zeroed by the kernel
            grad_rows = grad_t
        if grad_s is not None or grad_rows is not None:
            ops.native().lookup_gather_backward(
                g.data_ptr(), codes.data_ptr(), scores.data_ptr(), tables.data_ptr(), n, h,
                rows.bit_length() - 1, d, 0 if grad_s is None else grad_s.data_ptr(),
                0 if grad_rows is None else grad_rows.data_ptr(),
                0 if row_index is None else row_index.data_ptr(),
                tables.dtype == torch.float64, threads(),
            )  # fmt: skip
        if need_t and ctx.sparse:
            index = torch.stack((uniq // rows, uniq % rows))  # (2, U): (table, row)
            grad_t = torch.sparse_coo_tensor(
                index, grad_rows, tables.shape, is_coalesced=True, check_invariants=False
            )
        return grad_s, None, grad_t, None


def gather_accumulate(
    scores: torch.Tensor, codes: torch.Tensor, tables: torch.Tensor, *, sparse: bool = False
) -> torch.Tensor:
    """Differentiable ``y[n] = sum_k scores[n, k] * tables[k, codes[n, k]]``.

    scores (N, h) float, codes (N, h) integer in [0, 2^tau), tables (h, 2^tau, d) -> y (N, d).
    Native kernels for float32/float64 CPU tensors (deterministic backward); otherwise plain
    PyTorch autograd. ``sparse=True`` returns the table gradient as a sparse COO tensor holding
    only the rows the batch touched (use an optimizer that accepts sparse gradients).
    """
    native = (
        ops.native_available()
        and tables.dtype in (torch.float32, torch.float64)
        and scores.dtype == tables.dtype
        and tables.device.type == "cpu"
    )
    if native:
        return _GatherAccumulate.apply(scores, codes, tables, sparse)
    return gather_reference(scores, codes, tables)


def pack_dense(weight: torch.Tensor) -> torch.Tensor:
    """nn.Linear weight (P, d) -> the kernel's (d, P) [in, out] layout."""
    return weight.detach().t().contiguous().float()


def hadamard(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix (entries +-1, n a power of two): H[i, k] =
    (-1)^popcount(i & k), so that ``fwht_reference(x) == x @ hadamard(n)``."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard: n must be a power of two, got {n}")
    i = torch.arange(n)
    bits = torch.bitwise_and(i[:, None], i[None, :])  # (n, n) i & k
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits = bits >> 1
    return (1 - 2 * parity).to(dtype)


def pack_bh4(blocks: torch.Tensor) -> torch.Tensor:
    """BH4 blocks (R, 4, D/b, b, b) [out, in] -> (R, 4, D/b, b, b) [in, out] with each stage's
    FWHT stages h < b and its 1/sqrt(D) folded in: packed[r, s, j] = blocks[r, s, j]^T H_b /
    sqrt(D). H_D = H_{D/b} (x) H_b, so the kernel then runs only the FWHT stages h >= b (the
    ones across blocks). Folded in float64, rounded once to float32."""
    D = blocks.shape[-3] * blocks.shape[-1]
    b = blocks.shape[-1]
    a = blocks.detach().double().transpose(-1, -2)  # (R, 4, D/b, b_in, b_out)
    return (a @ hadamard(b) * D**-0.5).float().contiguous()  # (R, 4, D/b, b_in, b_out)


TABLE_CHUNK = 64  # columns per chunk of the packed inference tables (the kernel's kChunk)


def pack_tables(tables: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """tables (h, 2^tau, d) -> the kernel's chunk-major (h, ceil(d/64), 2^tau, 64) layout.

    Columns past d are zero. One table's column chunk is contiguous, so the kernel's working
    set for a chunk is one dense block (no cache-set aliasing from 4*d-byte row strides).
    """
    h, rows, d = tables.shape
    nc = -(-d // TABLE_CHUNK)
    padded = torch.nn.functional.pad(tables.detach(), (0, nc * TABLE_CHUNK - d))
    chunked = padded.reshape(h, rows, nc, TABLE_CHUNK).transpose(1, 2)  # (h, nc, rows, 64)
    out = _hugemem.empty((h, nc, rows, TABLE_CHUNK), dtype)
    out.copy_(chunked)  # rounds to nearest even for bfloat16
    return out


def make_forward_plan(
    *,
    d_model: int,
    num_tables: int,
    table_bits: int,
    bh4: bool,
    padded: int,
    repeats: int,
    block_size: int,
    wt: torch.Tensor,
    pbias: torch.Tensor,
    tables: torch.Tensor,
    bias: torch.Tensor,
):
    """Check the packed weights once; return the native plan (``LookupPlan``) holding them.

    ``wt`` is the packed projection (``pack_dense`` / ``pack_bh4``), ``tables`` the packed
    tables (``pack_tables``), float32 or bfloat16. The caller keeps the tensors alive.
    """
    d, h, tau = d_model, num_tables, table_bits
    p = h * tau
    if bh4:
        nb = padded // block_size
        check_f32("lookup_forward: wt", wt, (repeats, 4, nb, block_size, block_size))
    else:
        check_f32("lookup_forward: wt", wt, (d, p))
    check_f32("lookup_forward: pbias", pbias, (p,))
    check_f32("lookup_forward: bias", bias, (d,))
    if tables.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"lookup_forward: tables: expected float32 or bfloat16, got {tables.dtype}")
    nc = -(-d // TABLE_CHUNK)
    check_tensor("lookup_forward: tables", tables, tables.dtype, (h, nc, 1 << tau, TABLE_CHUNK))
    return ops.native().LookupPlan(
        d, h, tau, bh4, padded, repeats, block_size, wt.data_ptr(), pbias.data_ptr(),
        tables.data_ptr(), tables.dtype == torch.bfloat16, bias.data_ptr(),
    )  # fmt: skip


def run_forward(plan, x: torch.Tensor, order: int = 0) -> torch.Tensor:
    """Fused native LookupFFN inference of x (N, d) float32 contiguous with a checked plan.

    ``order``: 0 picks the gather loop order by batch size, 1 forces token-major, 2
    table-major (for tests).
    """
    d = plan.d
    if x.dtype != torch.float32 or x.dim() != 2 or x.shape[1] != d or not x.is_contiguous():
        check_f32("lookup_forward: x", x)
        raise ValueError(f"lookup_forward: expected x (N, {d}), got shape {tuple(x.shape)}")
    y = torch.empty_like(x)
    plan.run(x.data_ptr(), x.shape[0], y.data_ptr(), order, threads())
    return y


def table_major_shape() -> tuple[int, int, int]:
    """(group, tile, ahead) of the native table-major gather (big batches).

    ``group`` tables are summed in registers per pass over a tile of ``tile`` tokens, and each
    token's rows are prefetched into L1 ``ahead`` tokens before it (0: not at all). The
    default depends on this CPU's L2 size (``csrc/kernels/lookup_shape.cpp``).
    """
    return tuple(ops.native().lookup_table_major_shape())


@contextlib.contextmanager
def use_table_major_shape(group: int, tile: int, ahead: int = 0) -> Iterator[None]:
    """Run a block with the table-major gather's shape forced (process-wide; tests, tuning).

    Outputs differ between shapes only by float summation order. Not for use while another
    thread runs LookupFFN forwards.
    """
    native = ops.native()
    # an override in force is restored as it was; else the default (0, 0, 0), so that the
    # shape keeps following the CPU
    before = (
        native.lookup_table_major_shape()
        if native.lookup_table_major_shape_overridden()
        else (0, 0, 0)
    )
    native.set_lookup_table_major_shape(group, tile, ahead)
    try:
        yield
    finally:
        native.set_lookup_table_major_shape(*before)
