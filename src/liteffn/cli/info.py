"""`liteffn info`: version, native status, ISA, CPU features, threads."""

from __future__ import annotations

import argparse
import json

import torch

from liteffn import __version__, _sysinfo, ops
from liteffn.bench import dense_isa


def collect() -> dict:
    native = ops.native_available()
    # the LookupFFN big-batch gather's shape, picked by the L2 size (kernels/lookup_shape.cpp)
    shape = ops.native().lookup_table_major_shape() if native else None
    return {
        "liteffn": __version__,
        "torch": torch.__version__,
        "native": native,
        "native_error": ops.load_error(),
        "isa": ops.get_isa(),
        "available_isas": ops.available_isas(),
        "openmp": bool(native and ops.native().openmp),
        "kernel_families": list(ops.native().families) if native else [],
        "cpu": _sysinfo.cpu_model(),
        "cpu_features": _sysinfo.simd_features(),
        "cores": _sysinfo.cpu_count(),
        "l2_cache_bytes": ops.native().l2_cache_bytes() if native else None,
        "lookup_table_major": (
            dict(zip(("group", "tile", "ahead"), shape, strict=True)) if shape else None
        ),
        "torch_threads": torch.get_num_threads(),
        "dense_isa": dense_isa(),  # what PyTorch's dense FFN runs at (see `bench --isa`)
        "commit": _sysinfo.git_commit(),
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        if isinstance(value, list):
            value = " ".join(map(str, value)) or "-"
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        if key == "native_error" and value is None:
            continue
        print(f"{key:<{width}}  {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show version, native kernel status, ISA and CPU features")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)
