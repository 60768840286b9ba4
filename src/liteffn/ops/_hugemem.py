"""Huge-page memory for large tensors that kernels read at random rows.

LookupFFN's tables and a deep FastFeedForward tree's weights are read one row at a time at
random: on 4 KiB pages nearly every row is a TLB miss (a two-dimensional page walk on a VM),
with 2 MiB pages the whole tensor is TLB-resident. PyTorch aligns a large tensor to 64 bytes,
so only its 2 MiB-aligned interior could be collapsed into huge pages afterwards; ``empty``
instead maps the tensor 2 MiB-aligned with the kernel's huge-page advice. The mapping lives
exactly as long as the tensor's storage (the storage holds the buffer it was made from), and
such a tensor cannot be resized in place.

Example::

    w = empty((4095, 768))  # (rows, d) float32, uninitialised, 2 MiB-aligned
"""

from __future__ import annotations

import contextlib
import math
import mmap

import torch

__all__ = ["ALIGN", "MIN_BYTES", "aligned", "empty", "mapping"]

MIN_BYTES = 2 << 20  # smaller tensors: plain torch.empty (within one huge page anyway)
ALIGN = 2 << 20  # a mapping of nbytes spans nbytes + ALIGN, for the alignment


def mapping(nbytes: int) -> mmap.mmap:
    """Private anonymous memory for an ``nbytes`` tensor starting on a 2 MiB boundary
    (``aligned``), advised for huge pages (shared mappings are shmem, which THP's "madvise"
    mode skips)."""
    region = mmap.mmap(-1, nbytes + ALIGN, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # a kernel without THP: ordinary pages, still correct
            region.madvise(mmap.MADV_HUGEPAGE)
    return region


def aligned(buffer, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The 2 MiB-aligned tensor of ``shape`` inside ``buffer`` (a ``mapping`` or a memoryview
    of one). Its storage is exactly the tensor (safetensors refuses to save a tensor that does
    not cover its storage) and holds a reference to ``buffer``."""
    base = torch.frombuffer(buffer, dtype=torch.uint8, count=1).data_ptr()
    return torch.frombuffer(
        buffer, dtype=dtype, count=math.prod(shape), offset=(-base) % ALIGN
    ).view(shape)


def empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape``; huge-page backed and 2 MiB-aligned when it
    has MIN_BYTES or more (plain ``torch.empty`` otherwise, or where madvise is missing)."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if nbytes < MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype)
    return aligned(mapping(nbytes), shape, dtype)
