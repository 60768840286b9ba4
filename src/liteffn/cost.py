"""Inference cost of one FFN layer per token: FLOPs, weight bytes, bytes touched."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Per-token inference cost of a layer.

    Attributes:
        flops_per_token: arithmetic per token, a multiply-add counted as 2 FLOPs (table reads
            and compares of weightless layers are counted here too, one each).
        param_bytes: bytes of all weights the layer stores for inference.
        bytes_per_token: weight bytes one token touches at inference.
    """

    flops_per_token: int
    param_bytes: int
    bytes_per_token: int

    def __post_init__(self) -> None:
        for name in ("flops_per_token", "param_bytes", "bytes_per_token"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Cost.{name} must be a non-negative int, got {value!r}")

    def flops_ratio(self, other: Cost) -> float:
        """How many times fewer FLOPs per token this layer needs than ``other``."""
        return other.flops_per_token / max(self.flops_per_token, 1)

    def __str__(self) -> str:
        return (
            f"{self.flops_per_token / 1e6:.3f} MFLOP/token, "
            f"{self.param_bytes / 2**20:.2f} MiB weights, "
            f"{self.bytes_per_token / 2**10:.1f} KiB touched/token"
        )
