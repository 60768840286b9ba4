"""FastFeedForward training step vs the masked-dense training UltraFastBERT uses.

    python benchmarks/bench_fff_train.py                    # batch 4096, threads 1 and 2
    python benchmarks/bench_fff_train.py --batch 4096 --threads 2 --repeats 5

One step = forward + backward (gradients for the input and every parameter) on the same
parameters and inputs. The baseline is UltraFastBERT's training formulation: all
``trees*nodes`` neurons computed densely (``linear_in``), GELU, masked to each token's path, then
``linear_out`` -- so it costs about as much as a dense FFN of width ``trees*nodes``. liteffn's
training path gathers only the ``trees*(depth+1)`` visited rows per token.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from liteffn import FastFeedForward, _sysinfo, ops


def masked_dense_forward(ffn: FastFeedForward, x: torch.Tensor) -> torch.Tensor:
    """UltraFastBERT's FFF training forward, on ``ffn``'s parameters."""
    n = x.shape[0]
    logits = F.linear(x, ffn.w_in, ffn.b_in)  # (N, trees*nodes): every neuron
    with torch.no_grad():
        dec = (logits > 0).long().view(n, ffn.trees, ffn.nodes)
        mask = torch.zeros(n, ffn.trees, ffn.nodes)
        node = torch.zeros(n, ffn.trees, 1, dtype=torch.long)
        for level in range(ffn.depth + 1):
            mask.scatter_(2, node, 1.0)
            if level < ffn.depth:
                node = 2 * node + 1 + dec.gather(2, node)
    act = F.gelu(logits) * mask.view(n, -1)  # (N, trees*nodes), zero off the path
    return act @ ffn.w_out


def time_step(fn, ffn, x, gy, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        ffn.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_()
        t0 = time.perf_counter()
        fn(xi).backward(gy)
        if i:  # the first step warms up allocations
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--depth", type=int, default=11)
    p.add_argument("--trees", type=int, default=1)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    ffn = FastFeedForward(args.d_model, depth=args.depth, trees=args.trees).train()
    x = torch.randn(args.batch, args.d_model)
    gy = torch.randn(args.batch, args.d_model)
    print(
        f"CPU: {_sysinfo.cpu_model()} | commit {_sysinfo.git_commit()} | torch {torch.__version__}"
    )
    print(f"native: {ops.native_available()} (isa {ops.get_isa()}) | {ffn}")
    print()
    print("| threads | batch | liteffn step ms | masked-dense step ms | speedup |")
    print("|---:|---:|---:|---:|---:|")
    saved = torch.get_num_threads()
    try:
        for nt in args.threads:
            torch.set_num_threads(nt)
            t_lite = time_step(ffn, ffn, x, gy, args.repeats)
            t_dense = time_step(lambda t: masked_dense_forward(ffn, t), ffn, x, gy, args.repeats)
            print(
                f"| {nt} | {args.batch} | {t_lite * 1e3:.1f} | {t_dense * 1e3:.1f} "
                f"| {t_dense / t_lite:.1f}x |",
                flush=True,
            )
    finally:
        torch.set_num_threads(saved)


if __name__ == "__main__":
    main()
