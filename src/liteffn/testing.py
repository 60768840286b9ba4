"""The tolerance policy and kernel-vs-reference helpers, in one place.

Policy:
    * bit and integer paths (codes, addresses, LUT outputs): exact equality;
    * float kernels vs their reference: ``|actual - expected| <= rtol * (|expected| + scale)``
      with ``rtol = 1e-5`` and ``scale = max |expected|`` (summation order differs between
      kernels, so an output near zero is judged against the size of the outputs around it);
    * float64 gradient checks: ``rtol = 1e-9`` on the same rule;
    * DDP training vs one process on the same global batches: per-step losses and gradient
      norms within ``KERNEL_RTOL`` (only the summation order of the all-reduce differs);
    * approximations (a converted model vs its original) are judged by SQNR in dB or by a task
      metric, never by allclose.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from liteffn import ops

__all__ = [
    "KERNEL_RTOL",
    "assert_exact",
    "assert_kernel_close",
    "isa_levels",
    "sqnr_db",
    "use_isa",
]

KERNEL_RTOL = 1e-5
GRAD_RTOL_F64 = 1e-9


def _describe_mismatch(actual: torch.Tensor, expected: torch.Tensor, bad: torch.Tensor) -> str:
    idx = bad.nonzero()[:5]
    rows = [
        f"  at {tuple(i.tolist())}: got {actual[tuple(i)].item()!r}, "
        f"expected {expected[tuple(i)].item()!r}"
        for i in idx
    ]
    return f"{int(bad.sum())} of {bad.numel()} elements differ; first:\n" + "\n".join(rows)


def assert_kernel_close(
    actual: torch.Tensor, expected: torch.Tensor, *, rtol: float | None = None, what: str = ""
) -> None:
    """Assert a float kernel output matches its reference under the policy above."""
    if rtol is None:
        rtol = GRAD_RTOL_F64 if expected.dtype == torch.float64 else KERNEL_RTOL
    prefix = f"{what}: " if what else ""
    assert actual.shape == expected.shape, (
        f"{prefix}shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )
    a, e = actual.detach().double(), expected.detach().double()
    if e.numel() == 0:
        return
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), f"{prefix}NaN pattern differs"
    scale = e[~nan_e].abs().max().item() if (~nan_e).any() else 0.0
    bad = ((a - e).abs() > rtol * (e.abs() + scale)) & ~nan_e
    assert not bad.any(), prefix + _describe_mismatch(a, e, bad)


def assert_exact(actual: torch.Tensor, expected: torch.Tensor, *, what: str = "") -> None:
    """Assert bit-for-bit equality (integer and bit paths; NaN equals NaN)."""
    prefix = f"{what}: " if what else ""
    assert actual.shape == expected.shape, (
        f"{prefix}shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )
    assert actual.dtype == expected.dtype, f"{prefix}dtype {actual.dtype} != {expected.dtype}"
    if actual.is_floating_point():
        same = (actual == expected) | (torch.isnan(actual) & torch.isnan(expected))
    else:
        same = actual == expected
    assert bool(same.all()), prefix + _describe_mismatch(actual, expected, ~same)


def isa_levels() -> list[str]:
    """ISA levels to run kernel tests at on this machine (scalar always, avx2 and avx512 when
    present)."""
    return ops.available_isas()


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Run a block with the native kernels forced to ISA level ``name``."""
    with ops.use_isa(name):
        yield


def sqnr_db(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio of ``approx`` against ``exact`` in dB."""
    signal = exact.detach().double().pow(2).sum().item()
    noise = (approx.detach().double() - exact.detach().double()).pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-300) / noise)
