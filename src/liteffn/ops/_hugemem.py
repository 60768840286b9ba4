"""Huge-page memory for large weights that kernels read at random rows.

A FastFeedForward tree of depth 11 holds 25 MB that its eval kernel reads one 3 KiB row at a
time: on 4 KiB pages nearly every row is a TLB miss, a two-dimensional page walk on a VM.
PyTorch's allocator aligns a large tensor to 64 bytes, so only the 2 MiB-aligned interior of it
can be collapsed into huge pages afterwards (``fff_advise_weights``); ``empty`` instead maps the
whole tensor 2 MiB-aligned with the kernel's huge-page advice, so all of it is backed by huge
pages once written. The mapping lives exactly as long as the tensor's storage (the storage holds
the memoryview it was made from) and cannot be resized in place.

Example::

    w = empty((4095, 768))  # (rows, d) float32, uninitialised, 2 MiB-aligned
"""

from __future__ import annotations

import contextlib
import math
import mmap

import torch

__all__ = ["MIN_BYTES", "empty"]

MIN_BYTES = 8 << 20  # smaller tensors: plain torch.empty (a few pages, little to gain)
_ALIGN = 2 << 20


def empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 CPU tensor of ``shape``; huge-page backed when large."""
    nbytes = math.prod(shape) * 4
    if nbytes < MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape)
    mapping = mmap.mmap(-1, nbytes + _ALIGN, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # a kernel without THP: ordinary pages, still correct
        mapping.madvise(mmap.MADV_HUGEPAGE)
    raw = torch.frombuffer(memoryview(mapping), dtype=torch.uint8)  # keeps the mapping alive
    start = (-raw.data_ptr()) % _ALIGN
    return raw[start : start + nbytes].view(torch.float32).view(shape)
