"""Fast feedforward tree (UltraFastBERT form): reference, native kernel wrapper, training op.

Each of ``trees`` heap-ordered binary trees has ``nodes = 2**(depth+1) - 1`` neurons; node ``n``
has children ``2n+1`` (left) and ``2n+2`` (right); tree ``t`` owns rows ``t*nodes ... t*nodes +
nodes - 1`` of ``w_in`` (T*nodes, d), ``b_in`` (T*nodes,) and ``w_out`` (T*nodes, d). A token
``x`` walks each tree from the root for ``depth+1`` levels::

    a = <x, w_in[n]> + b_in[n];  y += gelu(a) * w_out[n];  n = 2n+2 if a > 0 else 2n+1

(exact erf GELU; ``a <= 0`` and NaN go left), so it touches ``trees*(depth+1)`` rows, never all.

Exactness note: the kernel sums the dot product in a different order from PyTorch, so an ``a``
within a few ulp of 0 may route differently; exactness tests therefore use inputs whose dot
products are exact in float32 in any order (small dyadic grids), and dedicated tie tests where
``a`` is exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from liteffn import ops
from liteffn.ops._check import check_f32, check_tensor, threads

__all__ = ["fff_leaf_native", "fff_native", "fff_paths", "fff_reference", "fff_train"]


def _sizes(w_in: torch.Tensor, depth: int, trees: int) -> int:
    nodes = 2 ** (depth + 1) - 1
    if w_in.shape[0] != trees * nodes:
        raise ValueError(
            f"fff: expected w_in with trees*nodes={trees * nodes} rows (depth={depth}, "
            f"trees={trees}), got shape {tuple(w_in.shape)}"
        )
    return nodes


def fff_paths(
    x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, depth: int, trees: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard descent in PyTorch: visited rows (N, trees*(depth+1)) int64 and their ``a`` values.

    Column ``t*(depth+1) + l`` holds tree ``t``'s node at level ``l`` (a global row index).
    The gathers are done without autograd; ``a`` is returned detached.
    """
    nodes = _sizes(w_in, depth, trees)
    n_tok = x.shape[0]
    idx_cols, a_cols = [], []
    with torch.no_grad():
        for t in range(trees):
            node = torch.zeros(n_tok, dtype=torch.long, device=x.device)  # (N,) local index
            for _ in range(depth + 1):
                row = node + t * nodes  # (N,) global row
                w = w_in.index_select(0, row)  # (N, d)
                a = torch.bmm(w.unsqueeze(1), x.unsqueeze(2)).view(n_tok) + b_in[row]  # (N,)
                idx_cols.append(row)
                a_cols.append(a)
                node = 2 * node + 1 + (a > 0).long()  # NaN > 0 is False: goes left
    empty = torch.empty(n_tok, 0)
    idx = torch.stack(idx_cols, 1) if idx_cols else empty.long()  # (N, K)
    act = torch.stack(a_cols, 1) if a_cols else empty.to(x.dtype)  # (N, K)
    return idx, act


def fff_reference(
    x: torch.Tensor,
    w_in: torch.Tensor,
    b_in: torch.Tensor,
    w_out: torch.Tensor,
    depth: int,
    trees: int,
    b_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-PyTorch hard inference, (N, d) -> (N, d): the specification the kernel matches."""
    idx, act = fff_paths(x, w_in, b_in, depth, trees)
    y = torch.zeros_like(x) if b_out is None else b_out.expand_as(x).clone()
    with torch.no_grad():
        g = F.gelu(act)  # (N, K)
        for k in range(idx.shape[1]):  # level by level, the order the definition reads
            y.addcmul_(g[:, k : k + 1], w_out.index_select(0, idx[:, k]))  # (N, d)
    return y


def fff_native(
    x: torch.Tensor,
    w_in: torch.Tensor,
    b_in: torch.Tensor,
    w_out: torch.Tensor,
    depth: int,
    trees: int,
    b_out: torch.Tensor | None = None,
    *,
    path: torch.Tensor | None = None,
    act: torch.Tensor | None = None,
) -> torch.Tensor:
    """Native hard inference of contiguous float32 CPU tensors; returns a new (N, d) output.

    With ``path`` (N, K) int32 and ``act`` (N, K) float32 (``K = trees*(depth+1)``), also
    records each visited global row and its ``a`` (used by the training op).
    """
    check_f32("fff: x", x)
    if x.dim() != 2:
        raise ValueError(f"fff: expected x of shape (N, d), got {tuple(x.shape)}")
    n_tok, d = x.shape
    nodes = _sizes(w_in, depth, trees)
    check_f32("fff: w_in", w_in, (trees * nodes, d))
    check_f32("fff: b_in", b_in, (trees * nodes,))
    check_f32("fff: w_out", w_out, (trees * nodes, d))
    if b_out is not None:
        check_f32("fff: b_out", b_out, (d,))
    k = trees * (depth + 1)
    if (path is None) != (act is None):
        raise ValueError("fff: pass both path and act, or neither")
    if path is not None:
        check_tensor("fff: path", path, torch.int32, (n_tok, k))
        check_f32("fff: act", act, (n_tok, k))
    y = torch.empty_like(x)
    ops.native().fff_forward(
        x.data_ptr(),
        w_in.data_ptr(),
        b_in.data_ptr(),
        w_out.data_ptr(),
        0 if b_out is None else b_out.data_ptr(),
        y.data_ptr(),
        0 if path is None else path.data_ptr(),
        0 if act is None else act.data_ptr(),
        n_tok,
        d,
        depth,
        trees,
        threads(),
    )
    return y


def fff_leaf_native(
    x: torch.Tensor,
    w_in: torch.Tensor,
    b_in: torch.Tensor,
    leaf_w1: torch.Tensor,
    leaf_b1: torch.Tensor,
    leaf_w2: torch.Tensor,
    leaf_b2: torch.Tensor,
    depth: int,
    trees: int,
    b_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Native hard inference of the leaf form (original FFF), (N, d) -> (N, d).

    Per tree: ``depth`` routing levels over ``w_in`` (T*(2**depth-1), d) / ``b_in`` (``a > 0``
    goes right, NaN left) to leaf ``L``; then ``gelu(leaf_w1[L] x + leaf_b1[L]) @ leaf_w2[L] +
    leaf_b2[L]`` with ``leaf_w1``, ``leaf_w2`` (T*2**depth, W, d), ``leaf_b1`` (T*2**depth, W),
    ``leaf_b2`` (T*2**depth, d); the trees' outputs and ``b_out`` are summed. All contiguous
    float32 CPU tensors.
    """
    check_f32("fff_leaf: x", x)
    if x.dim() != 2:
        raise ValueError(f"fff_leaf: expected x of shape (N, d), got {tuple(x.shape)}")
    if not 0 <= depth <= 30 or not 1 <= trees <= 64:
        raise ValueError(
            f"fff_leaf: expected 0 <= depth <= 30 and 1 <= trees <= 64, got depth={depth}, "
            f"trees={trees}"
        )
    n_tok, d = x.shape
    nodes, leaves = 2**depth - 1, trees * 2**depth
    if leaf_w1.dim() != 3:
        raise ValueError(
            f"fff_leaf: expected leaf_w1 of shape (L, W, d), got {tuple(leaf_w1.shape)}"
        )
    width = leaf_w1.shape[1]
    check_f32("fff_leaf: w_in", w_in, (trees * nodes, d))
    check_f32("fff_leaf: b_in", b_in, (trees * nodes,))
    check_f32("fff_leaf: leaf_w1", leaf_w1, (leaves, width, d))
    check_f32("fff_leaf: leaf_b1", leaf_b1, (leaves, width))
    check_f32("fff_leaf: leaf_w2", leaf_w2, (leaves, width, d))
    check_f32("fff_leaf: leaf_b2", leaf_b2, (leaves, d))
    if b_out is not None:
        check_f32("fff_leaf: b_out", b_out, (d,))
    if width < 1:
        raise ValueError(f"fff_leaf: expected a leaf width >= 1, got {width}")
    y = torch.empty_like(x)
    ops.native().fff_leaf_forward(
        x.data_ptr(),
        w_in.data_ptr() if nodes else 0,
        b_in.data_ptr() if nodes else 0,
        leaf_w1.data_ptr(),
        leaf_b1.data_ptr(),
        leaf_w2.data_ptr(),
        leaf_b2.data_ptr(),
        0 if b_out is None else b_out.data_ptr(),
        y.data_ptr(),
        n_tok,
        d,
        depth,
        trees,
        width,
        threads(),
    )
    return y


def _gelu_grad(a: torch.Tensor) -> torch.Tensor:
    """d/da of the exact GELU ``a * Phi(a)``: ``Phi(a) + a * phi(a)``."""
    cdf = 0.5 * (1.0 + torch.erf(a * 0.7071067811865476))
    pdf = torch.exp(-0.5 * a * a) * 0.3989422804014327
    return cdf + a * pdf


class _FFFTrain(torch.autograd.Function):
    """Hard-routed tree FFN with gathered rows: forward and backward cost ~ N*K*d, not N*nodes*d.

    The routing (which rows are visited) has no gradient; each visited row gets the gradient of
    its ``gelu(a) * w_out`` term.
    """

    @staticmethod
    def forward(ctx, x, w_in, b_in, w_out, depth: int, trees: int):
        fast = (
            ops.native_available()
            and x.dtype == torch.float32
            and all(t.dtype == torch.float32 for t in (w_in, b_in, w_out))
        )
        if fast:
            k = trees * (depth + 1)
            path = torch.empty(x.shape[0], k, dtype=torch.int32)
            act = torch.empty(x.shape[0], k)
            y = fff_native(
                x.contiguous(),
                w_in.detach().contiguous(),
                b_in.detach().contiguous(),
                w_out.detach().contiguous(),
                depth,
                trees,
                path=path,
                act=act,
            )
            idx = path.long()
        else:
            idx, act = fff_paths(x, w_in, b_in, depth, trees)
            g = F.gelu(act)
            y = torch.zeros_like(x)
            for k in range(idx.shape[1]):
                y.addcmul_(g[:, k : k + 1], w_out.index_select(0, idx[:, k]))  # (N, d)
        ctx.save_for_backward(x, w_in, w_out, idx, act)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w_in, w_out, idx, act = ctx.saved_tensors
        gy = gy.contiguous()
        g = F.gelu(act)  # (N, K)
        need_x, need_w_in, need_b_in, need_w_out = ctx.needs_input_grad[:4]
        gx = torch.zeros_like(x) if need_x else None
        gw_in = torch.zeros_like(w_in) if need_w_in else None
        gb_in = torch.zeros(w_in.shape[0], dtype=act.dtype) if need_b_in else None
        gw_out = torch.zeros_like(w_out) if need_w_out else None
        ga = torch.empty_like(act)  # (N, K): dL/da
        for k in range(idx.shape[1]):
            row = idx[:, k]  # (N,)
            wo = w_out.index_select(0, row)  # (N, d)
            ga[:, k] = torch.bmm(wo.unsqueeze(1), gy.unsqueeze(2)).view(-1)  # <gy, w_out[row]>
            if need_w_out:
                gw_out.index_add_(0, row, gy * g[:, k : k + 1])  # (N, d) rows scattered
        ga.mul_(_gelu_grad(act))
        for k in range(idx.shape[1]):
            row = idx[:, k]
            gk = ga[:, k : k + 1]  # (N, 1)
            if need_x:
                gx.addcmul_(gk, w_in.index_select(0, row))  # (N, d)
            if need_w_in:
                gw_in.index_add_(0, row, x * gk)
        if need_b_in:
            gb_in.index_add_(0, idx.reshape(-1), ga.reshape(-1))
        return gx, gw_in, gb_in, gw_out, None, None


def fff_train(
    x: torch.Tensor,
    w_in: torch.Tensor,
    b_in: torch.Tensor,
    w_out: torch.Tensor,
    depth: int,
    trees: int,
) -> torch.Tensor:
    """Differentiable hard-routed forward (N, d) -> (N, d), without ``b_out``.

    Gathers the ``trees*(depth+1)`` visited rows per token (the native kernel finds them for
    float32 when built); gradients reach ``x``, ``w_in``, ``b_in`` and ``w_out``.
    """
    _sizes(w_in, depth, trees)
    return _FFFTrain.apply(x, w_in, b_in, w_out, depth, trees)
