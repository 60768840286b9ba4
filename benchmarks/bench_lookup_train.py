"""Training-step cost of LookupFFN vs DenseFFN on the CPU (issue 4: ratio must be <= 1.5).

    python benchmarks/bench_lookup_train.py                  # batch 4096, 1 and 2 threads
    python benchmarks/bench_lookup_train.py --threads 2 --batch 4096 --repeats 9

One step = forward in train() mode + backward of sum(y * g) with fresh parameter gradients
(set_to_none), the same for both layers, interleaved in the same run at the same thread count.
Reported: median ms per step and lookup/dense (lower is better for LookupFFN).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from liteffn import DenseFFN, LookupFFN, _sysinfo, ops


def step(layer: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    (layer(x) * g).sum().backward()


def time_steps(layer, x, g, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(layer, x, g)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="steps per measurement")
    ap.add_argument("--sparse", action="store_true", help="sparse table gradients")
    args = ap.parse_args()
    torch.manual_seed(0)
    d = 512
    lookup = LookupFFN(d, 128, 8, "bh4", 64, sparse_grad=args.sparse).train()
    dense = DenseFFN(d, 2048).train()
    x = torch.randn(args.batch, d)
    g = torch.randn(args.batch, d)
    print(f"CPU: {_sysinfo.cpu_model()} | commit {_sysinfo.git_commit()} | isa {ops.get_isa()}")
    print("| threads | batch | LookupFFN ms/step | DenseFFN(512, 2048) ms/step | lookup/dense |")
    print("|---:|---:|---:|---:|---:|")
    saved = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for layer in (lookup, dense):  # warm-up: allocations, packing, page faults
                time_steps(layer, x, g, 1)
            t_lookup, t_dense = [], []
            for _ in range(args.repeats):
                t_lookup.append(time_steps(lookup, x, g, args.steps))
                t_dense.append(time_steps(dense, x, g, args.steps))
            tl, td = statistics.median(t_lookup), statistics.median(t_dense)
            print(f"| {threads} | {args.batch} | {tl * 1e3:.1f} | {td * 1e3:.1f} | {tl / td:.2f} |")
    finally:
        torch.set_num_threads(saved)


if __name__ == "__main__":
    main()
