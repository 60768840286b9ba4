"""Reused memory for large kernel outputs.

A fresh multi-MiB output tensor is paged in on its first write, one fault per page: on this
project's VMs that costs ~0.1-0.2 ms per MiB even with 2 MiB pages, ~0.7 ms per MiB with 4 KiB
pages -- for a 16384-token FastFeedForward batch (a 48 MiB output) more than the kernel spends
computing it. glibc hands allocations that large back to the OS on free, so PyTorch's
``torch.empty`` pays the faults on every call. ``empty`` instead returns a tensor over a pooled,
huge-page-advised mapping that no live tensor uses; a mapping is reused once every tensor (and
view) over it has been freed, which a weak reference tells: the tensor's storage holds the one
memoryview it was made from. Like the CUDA caching allocator, the pool keeps up to
``MAX_POOL_BYTES`` mapped after its tensors die. Pooled tensors cannot be resized in place.

Example::

    y = empty((16384, 768))  # (N, d) float32, uninitialised, 2 MiB-aligned
"""

from __future__ import annotations

import math
import threading
import weakref

import torch

from liteffn.ops import _hugemem

__all__ = ["MAX_POOL_BYTES", "MIN_BYTES", "empty"]

MIN_BYTES = 8 << 20  # smaller outputs fault in quickly enough: plain torch.empty
MAX_POOL_BYTES = 256 << 20  # mapped bytes the pool may hold, in use or not
_lock = threading.Lock()


class _Region:
    """One mapping; ``loan`` is a weak reference to the memoryview the live tensor (and its
    views) hold through their storage, dead once they are all freed."""

    def __init__(self, nbytes: int) -> None:
        self.map = _hugemem.mapping(nbytes)
        self.size = len(self.map)
        self.loan: weakref.ref | None = None

    def free(self) -> bool:
        return self.loan is None or self.loan() is None

    def lend(self, shape: tuple[int, ...]) -> torch.Tensor:
        view = memoryview(self.map)
        self.loan = weakref.ref(view)
        return _hugemem.aligned(view, shape, torch.float32)  # its storage keeps `view` alive


_regions: list[_Region] = []  # oldest first


def _take(nbytes: int) -> _Region | None:
    """A free pooled region of at least nbytes (at most about twice that), or a new one; None
    when the pool is full of regions in use."""
    need = nbytes + _hugemem.ALIGN  # the size of its mapping
    for r in _regions:
        if need <= r.size <= 2 * need and r.free():
            return r
    total = sum(r.size for r in _regions)
    for r in [r for r in _regions if r.free()]:  # make room: free regions of other sizes
        if total + need <= MAX_POOL_BYTES:
            break
        _regions.remove(r)
        total -= r.size
        r.map.close()
    if total + need > MAX_POOL_BYTES:
        return None
    _regions.append(_Region(nbytes))
    return _regions[-1]


def empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 CPU tensor of ``shape``, 2 MiB-aligned; pooled when large."""
    nbytes = math.prod(shape) * 4
    if nbytes < MIN_BYTES:
        return torch.empty(shape)
    with _lock:  # between the free check and the loan no other thread may take the region
        region = _take(nbytes)
        if region is None:
            return torch.empty(shape)
        return region.lend(shape)
