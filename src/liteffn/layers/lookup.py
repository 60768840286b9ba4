"""LookupFFN: hash the input into sign codes, and sum the learned table rows they address.

Zeng et al., "LookupFFN: Making Transformers Compute-lite for CPU Inference" (ICML 2023).
A cheap projection (BH4 or dense) gives z (N, h * tau); table k reads the tau signs of its slice
as a code (most significant bit first) and contributes ``score_k * tables[k, code_k]`` with
``score_k = (sum_j |z_kj|) * prod_j sigmoid(2 |z_kj|)``. The code has no gradient; the score and
the gathered rows do, so the same formula trains and infers.
"""

from __future__ import annotations

import torch
from torch import nn

from liteffn import ops
from liteffn.cost import Cost
from liteffn.layers.base import FFNLayer, NativeEvalCall, check_input
from liteffn.layers.bh4 import BH4Projection
from liteffn.ops import lookup as lookup_ops

__all__ = ["LookupFFN", "codes_and_scores"]

_F32 = torch.float32


def codes_and_scores(z: torch.Tensor, num_tables: int, table_bits: int):
    """z (N, h * tau) -> codes (N, h) int32 (MSB first) and scores (N, h) (differentiable)."""
    zt = z.reshape(z.shape[0], num_tables, table_bits)  # (N, h, tau)
    weights = 2 ** torch.arange(table_bits - 1, -1, -1, dtype=torch.int32)  # (tau,) MSB first
    codes = ((zt > 0).to(torch.int32) * weights).sum(-1, dtype=torch.int32)  # (N, h)
    a = zt.abs()
    scores = a.sum(-1) * torch.sigmoid(2 * a).prod(-1)  # (N, h)
    return codes, scores


class LookupFFN(NativeEvalCall, FFNLayer):
    """``y = bias + sum_k score_k(x) * tables[k, code_k(x)]`` over ``num_tables`` tables.

    Args:
        d_model: model width.
        num_tables: h, the number of tables.
        table_bits: tau, sign bits per table (each table has 2^tau rows), 1..12.
        projection: "bh4" (``BH4Projection``) or "dense" (one ``nn.Linear(d_model, h * tau)``).
        block_size: BH4 block size, a power of two dividing the padded width.
        sparse_grad: return the ``tables`` gradient as a sparse COO tensor over touched rows.
        table_dtype: inference storage of the tables, float32 or bfloat16 (``set_table_dtype``).

    Parameters: ``proj`` (the projection), ``tables`` (h, 2^tau, d_model), ``bias`` (d_model,).

    Example:
        >>> ffn = LookupFFN(256, num_tables=32, table_bits=6).eval()
        >>> ffn(torch.randn(2, 5, 256)).shape
        torch.Size([2, 5, 256])
    """

    has_native = True

    def __init__(
        self,
        d_model: int,
        num_tables: int = 128,
        table_bits: int = 8,
        projection: str = "bh4",
        block_size: int = 64,
        *,
        sparse_grad: bool = False,
        table_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if d_model < 1 or num_tables < 1:
            raise ValueError(
                f"LookupFFN: d_model and num_tables must be >= 1, got {d_model}, {num_tables}"
            )
        if not 1 <= table_bits <= 12:
            raise ValueError(f"LookupFFN: table_bits must be in [1, 12], got {table_bits}")
        if projection not in ("bh4", "dense"):
            raise ValueError(f"LookupFFN: projection must be 'bh4' or 'dense', got {projection!r}")
        self.d_model, self.num_tables, self.table_bits = d_model, num_tables, table_bits
        self.projection, self.sparse_grad = projection, sparse_grad
        width = num_tables * table_bits
        if projection == "bh4":
            self.proj: nn.Module = BH4Projection(d_model, width, block_size)
            self.block_size = block_size
        else:
            self.proj = nn.Linear(d_model, width)
            self.block_size = 0
        self.tables = nn.Parameter(
            torch.randn(num_tables, 2**table_bits, d_model) * (num_tables * table_bits) ** -0.5
        )  # (h, 2^tau, d_model)
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.set_table_dtype(table_dtype)

    # -- the map ----------------------------------------------------------------------------

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """z = projection of x: (..., d_model) -> (..., num_tables * table_bits)."""
        return self.proj(x)

    def set_table_dtype(self, dtype: torch.dtype) -> LookupFFN:
        """Store the tables for inference as float32 (default) or bfloat16 (half the bytes).

        Affects ``eval()`` and ``reference()`` (both use the bfloat16-rounded tables); training
        always uses the float32 parameters.
        """
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"LookupFFN: table dtype must be float32 or bfloat16, got {dtype}")
        self.table_dtype = dtype
        # (native plan, packed tensors) as last packed by _plan, and the native LookupEval
        # built with them (NativeEvalCall.__call__ calls it)
        self._packed: tuple | None = None
        self._eval_call = None
        return self

    def _train_forward(self, x2: torch.Tensor) -> torch.Tensor:
        z = self.project(x2)  # (N, h * tau)
        codes, scores = codes_and_scores(z, self.num_tables, self.table_bits)
        tables = self.tables.to(z.dtype)
        y = lookup_ops.gather_accumulate(scores, codes, tables, sparse=self.sparse_grad)
        return y + self.bias.to(z.dtype)

    def _reference(self, x2: torch.Tensor) -> torch.Tensor:
        z = self.proj.reference(x2) if self.projection == "bh4" else self.proj(x2)
        codes, scores = codes_and_scores(z, self.num_tables, self.table_bits)
        tables = self.tables
        if self.table_dtype == torch.bfloat16:
            tables = tables.to(torch.bfloat16)
        tables = tables.to(z.dtype)
        return lookup_ops.gather_reference(scores, codes, tables) + self.bias.to(z.dtype)

    # -- the fused kernel -------------------------------------------------------------------

    def _plan(self):
        """The native plan (``LookupPlan``) of the weights, re-packed when a parameter changed."""
        # the LookupEval built with the plan watches the packed parameters: the same objects,
        # pointers (new storage: .to(), .data = ...) and version counters (in-place updates:
        # optimizer steps, load_state_dict); set_table_dtype clears _packed
        if self._packed is not None and self._eval_call.current():
            return self._packed[0]
        # plain dict reads: nn.Module.__getattr__ costs microseconds
        own, proj = self._parameters, self._modules["proj"]._parameters
        bh4 = self.projection == "bh4"
        weight_name = "blocks" if bh4 else "weight"
        w, pb, tables, bias = proj[weight_name], proj["bias"], own["tables"], own["bias"]
        with torch.no_grad():
            keep = (
                lookup_ops.pack_bh4(w) if bh4 else lookup_ops.pack_dense(w),
                pb.detach().float().contiguous(),
                lookup_ops.pack_tables(tables, self.table_dtype),
                bias.detach().float().contiguous(),
            )
            plan = lookup_ops.make_forward_plan(
                d_model=self.d_model,
                num_tables=self.num_tables,
                table_bits=self.table_bits,
                bh4=bh4,
                padded=self.proj.padded if bh4 else 0,
                repeats=self.proj.repeats if bh4 else 0,
                block_size=self.block_size,
                wt=keep[0],
                pbias=keep[1],
                tables=keep[2],
                bias=keep[3],
            )
        self._eval_call = ops.native().LookupEval(plan, own, proj, weight_name, ops.torch_refs())
        self._packed = (plan, keep)
        return plan

    def _native_forward(self, x2: torch.Tensor, order: int = 0) -> torch.Tensor:
        return lookup_ops.run_forward(self._plan(), x2, order)

    def __getstate__(self) -> dict:
        # copies and pickles re-pack on their first eval call (the native plan holds addresses)
        state = self.__dict__.copy()
        state["_packed"] = state["_eval_call"] = None
        return state

    # -- eval fast path ---------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            y = self._fast_eval(x)
            if y is not None:
                return y
            if isinstance(x, torch.Tensor) and x.dtype == _F32:
                check_input(x, self.d_model, "LookupFFN")
                if self._use_native(x):  # e.g. a non-contiguous input: the kernel on a copy
                    x2 = x.reshape(-1, self.d_model).contiguous()  # (N, d_model)
                    return lookup_ops.run_forward(self._plan(), x2).reshape(x.shape)
        return super().forward(x)

    def _fast_eval(self, x) -> torch.Tensor | None:
        """The kernel through the native LookupEval built with the current plan, or None when x
        is unusual (forward then handles it)."""
        return self._native_eval(x, self._repack)

    def _repack(self) -> bool:
        if ops._native is None:
            return False
        self._plan()  # the parameters changed (or first call): re-pack
        return True

    # -- accounting -------------------------------------------------------------------------

    def cost(self) -> Cost:
        d, h, tau = self.d_model, self.num_tables, self.table_bits
        table_elem = 2 if self.table_dtype == torch.bfloat16 else 4
        proj_params = sum(p.numel() for p in self.proj.parameters())
        bh4 = self.projection == "bh4"
        proj_flops = self.proj.flops_per_token() if bh4 else 2 * d * h * tau
        table_bytes = table_elem * h * 2**tau * d
        return Cost(
            flops_per_token=proj_flops + 2 * h * d,
            param_bytes=table_bytes + 4 * (proj_params + d),
            bytes_per_token=4 * (proj_params + d) + table_elem * h * d,
        )

    def extra_repr(self) -> str:
        proj = f"{self.projection!r}" + (
            f", block_size={self.block_size}" if self.projection == "bh4" else ""
        )
        return (
            f"d_model={self.d_model}, num_tables={self.num_tables}, "
            f"table_bits={self.table_bits}, projection={proj}"
        )
