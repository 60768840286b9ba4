"""LookupFFN memory: table bytes and peak RSS of a process running inference (issue 4).

    python benchmarks/bench_lookup_memory.py            # d 512, 128 x 256 tables, BH4; batch 4096

Each configuration runs in its own process (peak RSS is per process): build the layer, run
eval() on a batch, report ``cost().param_bytes`` and the process's peak RSS (ru_maxrss). The
dense FFN row is the baseline; "torch only" is the interpreter with torch imported.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

CONFIGS = {
    "torch only": "None",
    "DenseFFN(512, 2048)": "DenseFFN(512, 2048)",
    "LookupFFN bh4 fp32": "LookupFFN(512, 128, 8, 'bh4', 64)",
    "LookupFFN bh4 bf16": "LookupFFN(512, 128, 8, 'bh4', 64, table_dtype=torch.bfloat16)",
    "LookupFFN dense fp32": "LookupFFN(512, 128, 8, 'dense')",
}


def child(expr: str, batch: int) -> None:
    import torch

    from liteffn import DenseFFN, LookupFFN  # noqa: F401  (used by eval)

    layer = eval(expr)
    weight_bytes = 0
    if layer is not None:
        layer.eval()
        with torch.inference_mode():
            layer(torch.randn(batch, 512))
        weight_bytes = layer.cost().param_bytes
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{weight_bytes} {rss}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.batch)
        return
    print("| layer | weight bytes (MiB) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    for name, expr in CONFIGS.items():
        out = subprocess.run(
            [sys.executable, __file__, "--batch", str(args.batch), "--child", expr],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        weight, rss = int(out[-2]), int(out[-1])
        print(f"| {name} | {weight / 2**20:.1f} | {rss / 2**20:.0f} |")


if __name__ == "__main__":
    main()
