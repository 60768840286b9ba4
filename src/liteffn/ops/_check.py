"""Argument checks shared by the op wrappers: nothing reaches C++ unchecked."""

from __future__ import annotations

import torch


def threads() -> int:
    """Thread count for a kernel call: the same as PyTorch's intra-op setting."""
    return torch.get_num_threads()


def check_f32(name: str, t: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    """Require a contiguous float32 CPU tensor, of ``shape`` when given."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    check_tensor(name, t, torch.float32, shape)


def check_tensor(
    name: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...] | None = None
) -> None:
    """Require a contiguous CPU tensor of ``dtype`` (and ``shape`` when given)."""
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor, got device {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
