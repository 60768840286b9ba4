"""`liteffn bench`: time each layer family against PyTorch's dense FFN in the same run."""

from __future__ import annotations

import argparse
import os
import sys

from liteffn import _sysinfo
from liteffn.bench import (
    CASES,
    ISA_CAPS,
    format_markdown,
    header_lines,
    isa_caps_missing,
    run_benchmarks,
    write_csv,
)


def command_line(args: argparse.Namespace) -> list[str]:
    """The `liteffn bench` arguments that reproduce ``args`` (for re-executing under caps)."""
    argv = ["bench", *args.cases, "--batch", *map(str, args.batch)]
    if args.threads:
        argv += ["--threads", *map(str, args.threads)]
    if args.targets:
        argv.append("--targets")
    argv += ["--repeats", str(args.repeats), "--min-time", str(args.min_time)]
    for flag, value in (("--markdown", args.markdown), ("--csv", args.csv), ("--isa", args.isa)):
        if value:
            argv += [flag, value]
    return argv


def run(args: argparse.Namespace) -> int:
    if args.isa:
        missing = isa_caps_missing(args.isa, dict(os.environ))
        if missing:  # the libraries read their caps once, at start-up: start again with them
            sys.stdout.flush()
            sys.stderr.flush()
            env = {**os.environ, **missing}
            os.execve(sys.executable, [sys.executable, "-m", "liteffn", *command_line(args)], env)
    threads = args.threads or sorted({1, _sysinfo.cpu_count()})
    rows = run_benchmarks(
        args.cases,
        args.batch,
        threads,
        repeats=args.repeats,
        min_time=args.min_time,
        use_targets=args.targets,
    )
    text = "\n".join([*header_lines(), "", format_markdown(rows)])
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.csv:
        write_csv(rows, args.csv)
    if not rows:
        print("no benchmark ran (no requested layer family is available)", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark layers against PyTorch's dense FFN (median time, tokens/s, ratio)",
        description="Time each layer and PyTorch's dense FFN of the same width in the same run, "
        "interleaved, same thread count, on random inputs where every token takes its own path.",
    )
    p.add_argument(
        "cases",
        nargs="*",
        default=list(CASES),
        metavar="CASE",
        help=f"which cases (default: all available): {', '.join(CASES)}",
    )
    p.add_argument("--batch", type=int, nargs="+", default=[1, 128], help="batch sizes (tokens)")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts (default: 1 and all cores)",
    )
    p.add_argument(
        "--targets",
        action="store_true",
        help="run each case at the (threads, batch) points its issue sets, "
        "and mark each target met or missed",
    )
    p.add_argument("--repeats", type=int, default=7, help="measurements per row (median taken)")
    p.add_argument(
        "--min-time",
        type=float,
        default=0.05,
        help="seconds per measurement (calls are batched to reach it)",
    )
    p.add_argument(
        "--isa",
        choices=list(ISA_CAPS),
        default=None,
        help="cap our kernels and PyTorch's dense FFN (MKL, oneDNN, ATen) at this level, e.g. "
        "avx2 to stand in for a machine without AVX-512 (the command restarts itself with "
        "the caps set; default: each side uses the best this CPU has)",
    )
    p.add_argument("--markdown", metavar="PATH", help="also write the table to PATH")
    p.add_argument("--csv", metavar="PATH", help="also write the rows as CSV")
    p.set_defaults(func=run)
