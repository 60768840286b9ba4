"""Layer benchmark harness shared by `liteffn bench` and `benchmarks/bench_layers.py`.

Every row times a lite layer and PyTorch's own dense FFN (``nn.Linear``, exact GELU,
``nn.Linear``, fp32) in the same run, interleaved, at the same thread count, both in eval mode
under ``torch.inference_mode()`` and called through the module. Inputs are random normal and
drawn from a pool of distinct batches (at least 4096 distinct tokens), so each call and each
token takes its own path and no layer is timed on a cached input. Reported: medians and the
ratio ``dense time / layer time`` (higher is better for the layer).

On a machine with AVX-512, PyTorch's dense FFN runs twice as wide as on an AVX2-only one, so a
ratio taken there says little about the other. ``ISA_CAPS`` are the environment settings that
cap both sides at one level (our kernels through ``LITEFFN_ISA``; MKL, oneDNN and ATen through
their own variables); they take effect only in a process started with them set, which is why
`liteffn bench --isa` re-executes itself.
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from liteffn import _sysinfo, ops

__all__ = [
    "CASES",
    "ISA_CAPS",
    "BenchCase",
    "BenchRow",
    "dense_isa",
    "format_markdown",
    "isa_caps_missing",
    "run_benchmarks",
    "write_csv",
]

# Per ISA level: the environment that holds our kernels and PyTorch's dense FFN (MKL's GEMM,
# oneDNN, ATen's vectorized GELU) at that level. Read once, when each library initialises.
ISA_CAPS: dict[str, dict[str, str]] = {
    "avx2": {
        "LITEFFN_ISA": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
    },
    "avx512": {
        "LITEFFN_ISA": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "ATEN_CPU_CAPABILITY": "avx512",
    },
}


def isa_caps_missing(level: str, environ: dict[str, str]) -> dict[str, str]:
    """The settings of ``ISA_CAPS[level]`` that ``environ`` lacks (empty: the caps hold).

    Raises ValueError for an unknown level and for one this CPU (or build) cannot run."""
    if level not in ISA_CAPS:
        raise ValueError(f"--isa must be one of {', '.join(ISA_CAPS)}, got {level!r}")
    available = ops.available_isas()
    if level not in available:
        raise ValueError(
            f"--isa {level}: this machine's kernels run at {', '.join(available) or 'none'} "
            "(no native module or a CPU without that level)"
        )
    return {k: v for k, v in ISA_CAPS[level].items() if environ.get(k) != v}


@dataclass(frozen=True)
class BenchCase:
    """One layer configuration and the dense FFN it is compared with."""

    name: str
    target: str  # "module:Class"
    kwargs: dict
    d_model: int
    dense_d_ff: int
    # (threads, batch, minimum ratio) the issues ask for; threads 0 means all cores.
    targets: tuple[tuple[int, int, float], ...] = field(default=())

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.target.split(':')[1]}({args})"

    def make(self) -> nn.Module:
        """Build the layer; raises ImportError while its family is not in the package yet."""
        module_name, cls_name = self.target.split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls(**self.kwargs)


CASES: dict[str, BenchCase] = {
    c.name: c
    for c in [
        BenchCase(
            "dense", "liteffn.layers.dense:DenseFFN", {"d_model": 768, "d_ff": 3072}, 768, 3072
        ),
        BenchCase(
            "fff",
            "liteffn.layers.fff:FastFeedForward",
            {"d_model": 768, "depth": 11},
            768,
            3072,
            ((1, 1, 100.0), (1, 128, 60.0), (0, 16384, 78.0)),
        ),
        BenchCase(
            "fff-vs-4095",
            "liteffn.layers.fff:FastFeedForward",
            {"d_model": 768, "depth": 11},
            768,
            4095,
        ),
        # MiniLM's FFN (384 -> 1536) at the 4x budget `liteffn convert` picks: many shallow
        # trees, the forest schedule
        BenchCase(
            "fff-forest",
            "liteffn.layers.fff:FastFeedForward",
            {"d_model": 384, "depth": 4, "trees": 76, "bias_out": True},
            384,
            1536,
        ),
        BenchCase(
            "lookup",
            "liteffn.layers.lookup:LookupFFN",
            {
                "d_model": 512,
                "num_tables": 128,
                "table_bits": 8,
                "projection": "bh4",
                "block_size": 64,
            },
            512,
            2048,
            ((1, 1, 6.0), (0, 32768, 4.0)),
        ),
        BenchCase(
            "lookup-dense",
            "liteffn.layers.lookup:LookupFFN",
            {"d_model": 512, "num_tables": 128, "table_bits": 8, "projection": "dense"},
            512,
            2048,
        ),
        BenchCase(
            "lookup-bf16",
            "liteffn.layers.lookup:LookupFFN",
            {
                "d_model": 512,
                "num_tables": 128,
                "table_bits": 8,
                "projection": "bh4",
                "block_size": 64,
                "table_dtype": torch.bfloat16,
            },
            512,
            2048,
        ),
        BenchCase(
            "lut",
            "liteffn.layers.lut:LUTFFN",
            {
                "d_model": 192,
                "bits_per_channel": 8,
                "hidden_luts": 3072,
                "luts_per_output": 16,
                "lut_inputs": 6,
            },
            192,
            768,
            ((1, 256, 5.0), (1, 1, 2.0)),
        ),
    ]
}


@dataclass
class BenchRow:
    case: str
    layer: str
    threads: int
    batch: int
    layer_us: float  # median per call
    dense_us: float  # median per call, dense FFN of the same width, same run
    isa: str

    @property
    def ratio(self) -> float:
        return self.dense_us / self.layer_us if self.layer_us > 0 else math.inf

    @property
    def us_per_token(self) -> float:
        return self.layer_us / max(self.batch, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.batch / (self.layer_us * 1e-6) if self.layer_us > 0 else math.inf

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(ratio=self.ratio, us_per_token=self.us_per_token, tokens_per_s=self.tokens_per_s)
        return d


def dense_baseline(d_model: int, d_ff: int) -> nn.Module:
    """PyTorch's own dense FFN, exactly as a PyTorch user writes it."""
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model)).eval()


def _input_pool(batch: int, d_model: int, seed: int) -> list[torch.Tensor]:
    """Distinct random batches: >= 4096 tokens in all, capped near 64 MiB."""
    gen = torch.Generator().manual_seed(seed)
    count = max(1, math.ceil(4096 / max(batch, 1)))
    count = max(1, min(count, (64 << 20) // max(1, 4 * batch * d_model)))
    return [torch.randn(batch, d_model, generator=gen) for _ in range(count)]


def _time_per_call(
    fn: Callable[[torch.Tensor], torch.Tensor], pool: list[torch.Tensor], calls: int
) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(pool[i % len(pool)])
    return (time.perf_counter() - start) / calls


def _calls_for(fn, pool, min_time: float) -> int:
    """Calls per measurement so that one measurement lasts about ``min_time`` seconds."""
    once = _time_per_call(fn, pool, 1)
    return max(1, min(100_000, int(min_time / max(once, 1e-7))))


def measure_pair(
    layer: nn.Module,
    dense: nn.Module,
    batch: int,
    d_model: int,
    *,
    repeats: int = 7,
    min_time: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Median seconds per call of (layer, dense), measured interleaved on the same inputs."""
    pool = _input_pool(batch, d_model, seed)
    with torch.inference_mode():
        for fn in (layer, dense):  # warm up: first-call allocations, page faults, caches
            _time_per_call(fn, pool, min(3, len(pool)))
        n_layer, n_dense = _calls_for(layer, pool, min_time), _calls_for(dense, pool, min_time)
        t_layer, t_dense = [], []
        for _ in range(repeats):
            t_layer.append(_time_per_call(layer, pool, n_layer))
            t_dense.append(_time_per_call(dense, pool, n_dense))
    return statistics.median(t_layer), statistics.median(t_dense)


def run_benchmarks(
    cases: Iterable[str],
    batches: Sequence[int] | None,
    threads: Sequence[int],
    *,
    repeats: int = 7,
    min_time: float = 0.05,
    use_targets: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Benchmark each case at each (threads, batch), or at its issue targets with use_targets.

    Cases whose layer family is not in the package yet are reported through ``log`` and skipped.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    plan: list[tuple[BenchCase, int, int]] = []
    for name in cases:
        if name not in CASES:
            raise ValueError(f"unknown benchmark case {name!r}; choose from {sorted(CASES)}")
        case = CASES[name]
        if use_targets:
            points = [(t or _sysinfo.cpu_count(), b) for t, b, _ in case.targets]
        else:
            points = [(t, b) for t in threads for b in (batches or [])]
        plan += [(case, t, b) for t, b in points]
    rows: list[BenchRow] = []
    saved_threads = torch.get_num_threads()
    built: dict[str, nn.Module | None] = {}
    try:
        for i, (case, nthreads, batch) in enumerate(plan, 1):
            if case.name not in built:
                try:
                    torch.manual_seed(0)
                    built[case.name] = case.make().eval()
                except ImportError as exc:
                    log(f"[bench] skip {case.name}: its layer is not available ({exc})")
                    built[case.name] = None
            layer = built[case.name]
            if layer is None:
                continue
            log(f"[bench] {i}/{len(plan)} {case.name} threads={nthreads} batch={batch}")
            torch.set_num_threads(nthreads)
            dense = dense_baseline(case.d_model, case.dense_d_ff)
            t_layer, t_dense = measure_pair(
                layer, dense, batch, case.d_model, repeats=repeats, min_time=min_time
            )
            rows.append(
                BenchRow(
                    case.name,
                    case.label,
                    nthreads,
                    batch,
                    t_layer * 1e6,
                    t_dense * 1e6,
                    ops.get_isa() or "reference",
                )
            )
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def target_for(row: BenchRow) -> float | None:
    for t, b, ratio in CASES[row.case].targets:
        if (t or _sysinfo.cpu_count()) == row.threads and b == row.batch:
            return ratio
    return None


def header_lines() -> list[str]:
    return [
        f"CPU: {_sysinfo.cpu_model()} ({_sysinfo.cpu_count()} cores; "
        f"{' '.join(_sysinfo.simd_features())})",
        f"commit: {_sysinfo.git_commit()} | torch {torch.__version__} | "
        f"native: {ops.native_available()} (isa {ops.get_isa()}) | dense: {dense_isa()}",
    ]


def dense_isa() -> str:
    """The instruction-set levels PyTorch's dense FFN runs at here: ATen's, and the MKL and
    oneDNN caps (``ISA_CAPS``) when set."""
    return (
        f"ATen {torch.backends.cpu.get_cpu_capability()}, "
        f"MKL {os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'uncapped')}, "
        f"oneDNN {os.environ.get('ONEDNN_MAX_CPU_ISA', 'uncapped')}"
    )


def format_markdown(rows: Sequence[BenchRow]) -> str:
    """A markdown table of the rows, with the issue target where one applies."""
    lines = [
        "| case | layer | dense d_ff | threads | batch | layer µs/call | µs/token | tokens/s "
        "| dense µs/call | speedup vs dense | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = target_for(r)
        mark = (
            ""
            if target is None
            else f">= {target:g}x " + ("met" if r.ratio >= target else "MISSED")
        )
        lines.append(
            f"| {r.case} | {r.layer} | {CASES[r.case].dense_d_ff} | {r.threads} | {r.batch} "
            f"| {r.layer_us:.1f} | {r.us_per_token:.3f} | {r.tokens_per_s:,.0f} "
            f"| {r.dense_us:.1f} | {r.ratio:.2f}x | {mark} |"
        )
    return "\n".join(lines)


def write_csv(rows: Sequence[BenchRow], path: str) -> None:
    import csv

    with open(path, "w", newline="") as f:
        fields = list(rows[0].as_dict()) if rows else ["case"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow(r.as_dict())
