"""`liteffn sweep`: the reproduction table and plot (quality vs FFN FLOPs and FFN latency)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import torch

    from liteffn import sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    points, skipped = sweep.plan(
        args.tasks, args.n_embd or (32 if args.tiny else 128), args.families, quick=args.quick
    )
    if args.report_only:
        rows = sweep._load(out / "results.jsonl")
    else:
        rows = []
        for task in args.tasks:
            kw = {"tiny": True} if args.tiny else dict(sweep.DEFAULT_RUN[task])
            if args.quick:
                kw["steps"] = max(1, kw.get("steps", 20) // 4)
            if args.steps is not None:
                kw["steps"] = args.steps
            if args.batch_size is not None:
                kw["batch_size"] = args.batch_size
            if not args.tiny:
                # one evaluation, at the end (the table reports it); a checkpoint half-way
                kw["eval_every"] = kw["steps"]
                kw["ckpt_every"] = max(1, kw["steps"] // 2)
                # vit: the whole 10k test set; text: 256 fixed validation windows
                kw["eval_batches"] = -(-10_000 // kw["batch_size"]) if task == "vit" else 16
                kw["warmup"] = min(100, max(1, kw["steps"] // 10))
            if args.n_embd:
                kw["n_embd"] = args.n_embd
            todo = [p for p in points if p.task == task]
            rows = sweep.run_sweep(todo, out, kw, latency_tokens=args.latency_tokens)
    rows = [r for r in rows if r["task"] in args.tasks]
    if not rows:
        raise RuntimeError(f"no sweep results in {out}")
    text = sweep.format_report(rows, skipped)
    (out / "sweep.md").write_text(text + "\n")
    sweep.plot(rows, out / "sweep.png")
    print(text)
    print(f"wrote {out / 'sweep.md'} and {out / 'sweep.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train every FFN on mlm/lm/vit at equal steps; table + plot of quality vs cost",
        description="For each task and FFN (dense, dense narrowed to each lite layer's FLOPs, "
        "LookupFFN at several table counts, FastFeedForward at several depths, LUTFFN): train "
        "at equal steps, then report validation perplexity/accuracy against FFN FLOPs per token "
        "and measured FFN latency. Writes OUT/results.jsonl, OUT/sweep.md and OUT/sweep.png; "
        "finished points are not retrained.",
    )
    p.add_argument("--tasks", nargs="+", default=["mlm", "lm", "vit"], choices=["mlm", "lm", "vit"])
    p.add_argument(
        "--families",
        nargs="+",
        default=["dense", "lookup", "fff", "lut"],
        choices=["dense", "lookup", "fff", "lut"],
    )
    p.add_argument(
        "--steps", type=int, help="steps per point (default: sweep.DEFAULT_RUN, 200; --tiny: 20)"
    )
    p.add_argument("--batch-size", type=int, help="global batch (default 8 sequences, 32 images)")
    p.add_argument("--quick", action="store_true", help="one point per family, 1/4 of the steps")
    p.add_argument("--tiny", action="store_true", help="tiny models and data (seconds per point)")
    p.add_argument("--n-embd", type=int, help="model width (default 128; --tiny: 32)")
    p.add_argument("--latency-tokens", type=int, default=256, help="tokens per timed FFN call")
    p.add_argument("--out", default="benchmarks/out/sweep", help="results folder")
    p.add_argument("--threads", type=int, help="torch threads for training")
    p.add_argument("--report-only", action="store_true", help="only rebuild table and plot")
    p.set_defaults(func=run)
