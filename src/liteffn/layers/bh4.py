"""BH4: a cheap learned projection from products of block-diagonal and Hadamard matrices.

Following LookupFFN (Zeng et al., 2023): pad x to D (a power of two), apply 4 stages of
(block-diagonal matrix with D/b blocks of b x b, then the orthonormal Walsh-Hadamard transform
H/sqrt(D)), mix ``0.7 * stages(x) + 0.3 * x``, repeat R times with independent blocks,
concatenate, cut to ``out_features`` and add a bias. Cost per token: R * 4 * (2 D b + D log2 D).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from liteffn.ops.fwht import fwht, fwht_reference

__all__ = ["BH4Projection", "next_pow2"]

STAGES = 4
MIX = 0.7  # weight of the stages; 1 - MIX of the input passes straight through


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << max(0, (n - 1).bit_length())


class BH4Projection(nn.Module):
    """``in_features -> out_features`` through R repeats of 4 (block-diagonal, FWHT) stages.

    Parameters: ``blocks`` (R, 4, D/b, b, b) stored [out, in], initialised N(0, 1/b); ``bias``
    (out_features,).

    Example:
        >>> proj = BH4Projection(384, 1024, block_size=64)
        >>> proj(torch.randn(3, 384)).shape
        torch.Size([3, 1024])
    """

    def __init__(self, in_features: int, out_features: int, block_size: int = 64) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"BH4Projection: in_features and out_features must be >= 1, got "
                f"{in_features}, {out_features}"
            )
        padded = next_pow2(in_features)
        b = block_size
        if b < 1 or b & (b - 1) or b > padded:
            raise ValueError(
                f"BH4Projection: block_size must be a power of two dividing the padded width "
                f"{padded}, got {block_size}"
            )
        self.in_features, self.out_features, self.block_size = in_features, out_features, b
        self.padded = padded
        self.repeats = math.ceil(out_features / padded)
        self.blocks = nn.Parameter(
            torch.randn(self.repeats, STAGES, padded // b, b, b) * b**-0.5
        )  # (R, 4, D/b, b_out, b_in)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def _project(self, x: torch.Tensor, transform: Callable) -> torch.Tensor:
        n, D, b = x.shape[0], self.padded, self.block_size
        xp = F.pad(x, (0, D - self.in_features))  # (N, D)
        outs = []
        for r in range(self.repeats):
            h = xp
            for s in range(STAGES):
                hb = h.reshape(n, D // b, b).transpose(0, 1)  # (blocks, N, b_in), a view
                # one batched product per block: (blocks, N, b_in) @ (blocks, b_in, b_out);
                # bmm takes the strided views as they are (einsum copied both ways)
                hb = torch.bmm(hb, self.blocks[r, s].transpose(1, 2))  # (blocks, N, b_out)
                h = hb.transpose(0, 1).reshape(n, D)
                h = transform(h, D**-0.5)  # orthonormal Walsh-Hadamard
            outs.append(MIX * h + (1.0 - MIX) * xp)
        z = torch.cat(outs, dim=-1)[:, : self.out_features]  # (N, R * D) -> (N, out)
        return z + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features), differentiable (FWHT op with backward)."""
        z = self._project(x.reshape(-1, self.in_features), fwht)
        return z.reshape(*x.shape[:-1], self.out_features)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same map with the pure-PyTorch FWHT (no native code)."""
        z = self._project(x.reshape(-1, self.in_features), fwht_reference)
        return z.reshape(*x.shape[:-1], self.out_features)

    def flops_per_token(self) -> int:
        D = self.padded
        return self.repeats * STAGES * (2 * D * self.block_size + D * (D.bit_length() - 1))

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, padded={self.padded}, "
            f"repeats={self.repeats}, block_size={self.block_size}"
        )
