"""The one place that calls the native module (``liteffn._native``).

Kernels take raw addresses and 64-bit sizes; the wrappers here check every tensor (dtype,
device, contiguity, shape) before its address crosses into C++. Each layer family has its own
submodule (``ops.fwht``, ``ops.fff``, ...); this module loads the library and controls the ISA.

Environment:
    LITEFFN_ISA=scalar|avx2|avx512|auto   force the kernels' instruction-set level (default:
        the best this CPU has; a family without an AVX-512 variant runs its AVX2 code at avx512).
    LITEFFN_NATIVE_LIB=/path.so    load this build of the module (e.g. the sanitizer build).
    LITEFFN_DISABLE_NATIVE=1       do not load the native module; references are used.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

from liteffn.ops import _outbuf

__all__ = [
    "available_isas",
    "get_isa",
    "load_error",
    "native",
    "native_available",
    "set_isa",
    "use_isa",
]

# Every ISA level the kernels can be built for, lowest first.
ISAS = ("scalar", "avx2", "avx512")

_native: ModuleType | None = None
_load_error: str | None = None


def _load() -> None:
    global _native, _load_error
    if os.environ.get("LITEFFN_DISABLE_NATIVE", "") not in ("", "0"):
        _load_error = "disabled by LITEFFN_DISABLE_NATIVE"
        return
    path = os.environ.get("LITEFFN_NATIVE_LIB")
    try:
        if path:
            spec = importlib.util.spec_from_file_location("liteffn._native", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"LITEFFN_NATIVE_LIB={path!r} is not a loadable module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module("liteffn._native")
    except ImportError as exc:
        _load_error = str(exc)
        warnings.warn(
            f"liteffn: native kernels unavailable ({exc}); using the PyTorch references. "
            "Rebuild with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    _native = module
    wanted = os.environ.get("LITEFFN_ISA", "auto")
    if wanted not in ("", "auto", *ISAS):
        warnings.warn(
            f"liteffn: LITEFFN_ISA must be scalar, avx2, avx512 or auto, got {wanted!r}; using "
            f"{module.get_isa()!r}",
            RuntimeWarning,
            stacklevel=3,
        )
    elif wanted == "avx2" and not module.cpu_has_avx2_fma():
        warnings.warn(
            "liteffn: LITEFFN_ISA=avx2 but this CPU lacks AVX2+FMA; using 'scalar'",
            RuntimeWarning,
            stacklevel=3,
        )
    elif wanted == "avx512" and not module.cpu_has_avx512():
        warnings.warn(
            f"liteffn: LITEFFN_ISA=avx512 but this CPU lacks AVX-512; using {module.get_isa()!r}",
            RuntimeWarning,
            stacklevel=3,
        )


_load()


def native_available() -> bool:
    """True when the compiled kernels are loaded."""
    return _native is not None


def native() -> ModuleType:
    """The loaded native module; raises RuntimeError when it is not available."""
    if _native is None:
        raise RuntimeError(f"liteffn native module is not available: {_load_error}")
    return _native


_torch_refs = None


def torch_refs():
    """torch's objects the layers' native eval calls (FFFEval, LookupEval, LutEval) use, built
    once."""
    global _torch_refs
    if _torch_refs is None:
        _torch_refs = native().TorchRefs(
            torch.Tensor, torch.float32, torch.empty_like, torch.is_grad_enabled,
            torch.get_num_threads, _outbuf.empty, _outbuf.MIN_BYTES,
        )  # fmt: skip
    return _torch_refs


def load_error() -> str | None:
    """Why the native module did not load, or None."""
    return _load_error


def available_isas() -> list[str]:
    """ISA levels usable on this CPU, lowest first (empty without the native module)."""
    if _native is None:
        return []
    levels = ["scalar"]
    if _native.cpu_has_avx2_fma():
        levels.append("avx2")
        if _native.cpu_has_avx512():
            levels.append("avx512")
    return levels


def get_isa() -> str | None:
    """The ISA level kernels dispatch to now, or None without the native module."""
    return None if _native is None else _native.get_isa()


def set_isa(name: str) -> None:
    """Select the kernels' ISA level ('scalar', 'avx2' or 'avx512') for the whole process.

    Raises ValueError for an unknown name and for a level this CPU lacks."""
    if name not in ISAS:
        raise ValueError(f"ISA must be one of {', '.join(ISAS)}, got {name!r}")
    native().set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Run a block with the kernels at ISA level ``name``, restoring the previous level."""
    previous = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        if previous is not None:
            set_isa(previous)
