"""The reproduction table: train each task with each FFN at equal steps, then report validation
quality against FFN FLOPs per token (``layer.cost()``) and measured FFN latency.

Points per task (model width d, defaults d = 128): dense (d_ff = 4d); LookupFFN at several table
counts; FastFeedForward at several depths; LUTFFN; and, for every lite point, a dense FFN
narrowed to the same FLOPs (``d_ff = flops / 4d``) — the baseline a lite layer has to beat.
Families whose layer is not importable are skipped (and listed in the report).

Results accumulate in ``OUT/results.jsonl`` (a finished point is not retrained), the report is
``OUT/sweep.md`` and the plot ``OUT/sweep.png``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from liteffn import _sysinfo
from liteffn.bench import dense_baseline, measure_pair
from liteffn.config import DenseConfig, FFFConfig, FFNConfig, LookupConfig, LUTConfig
from liteffn.models import ffn_layers
from liteffn.train import TrainConfig, train

__all__ = ["DEFAULT_RUN", "Point", "format_report", "plan", "plot", "run_sweep"]

# Per task at the default size (4 layers, d = 128), equal steps for every point of a task:
# 200 steps of 8 sequences x 128 tokens (text) or 32 images (1600 patches). Why so few: the full
# sweep (3 tasks x 11 points) has to run once in about an hour on a 2-core machine shared with
# other jobs, where a training step of the 4-layer model takes ~0.5-1 s (dense) to ~3-4 s
# (LUTFFN, whose hard lookups and EFD backward run on the CPU), 1 thread being faster than 2
# under contention. Smaller batches buy more optimizer steps for the same compute, which is what
# these short runs are starved of. On a quiet machine every point trains in well under 10 min.
DEFAULT_RUN = {
    "mlm": {"steps": 200, "batch_size": 8},
    "lm": {"steps": 200, "batch_size": 8},
    "vit": {"steps": 200, "batch_size": 32},
}
FAMILIES = ("dense", "lookup", "fff", "lut")
# Table learning rate = this x lr. LUT truth tables: 10x, as DWN. LookupFFN tables: 10x too —
# each of a table's 256 rows is hit by a few tokens per step, and at 1x the lm model at 98 steps
# (16 x 128 tokens, lr 1e-3) had training loss 3.26 (the FFN barely used) against 2.55 for
# dense; at 10x it had 2.57.
TABLE_LR_MULT = {"lut": 10.0, "lookup": 10.0}


@dataclass(frozen=True)
class Point:
    """One trained configuration of the sweep."""

    task: str
    label: str
    family: str  # dense, dense-narrow, lookup, fff, lut
    ffn: FFNConfig
    table_lr_mult: float = 1.0  # table learning rate = this x lr (see TABLE_LR_MULT)


def _available(cfg: FFNConfig) -> bool:
    try:
        importlib.import_module(cfg.layer.split(":")[0])
    except ImportError:
        return False
    return True


def _lite_configs(quick: bool) -> list[tuple[str, str, FFNConfig]]:
    tables = (16,) if quick else (8, 16)
    depths = (4,) if quick else (2, 4)
    out: list[tuple[str, str, FFNConfig]] = []
    for h in tables:
        out.append(("lookup", f"lookup h={h}", LookupConfig(num_tables=h, block_size=32)))
    for k in depths:
        out.append(("fff", f"fff depth={k} trees=8", FFFConfig(depth=k, trees=8)))
    out.append(("lut", "lut 8 bits, 1 hidden", LUTConfig()))
    return out


def plan(
    tasks: Sequence[str], d_model: int, families: Sequence[str] = FAMILIES, quick: bool = False
) -> tuple[list[Point], list[str]]:
    """The points to train, and the families skipped because their layer is not available."""
    lite = [c for c in _lite_configs(quick) if c[0] in families]
    skipped = sorted({fam for fam, _, cfg in lite if not _available(cfg)})
    lite = [c for c in lite if _available(c[2])]
    # the narrowed dense baselines: one per distinct FLOP count of the lite points
    narrow: dict[int, None] = {}
    for _, _, cfg in lite:
        flops = cfg.build(d_model).cost().flops_per_token
        narrow[max(1, round(flops / (4 * d_model)))] = None
    points: list[Point] = []
    for task in tasks:
        if "dense" in families:
            points.append(Point(task, "dense d_ff=4d", "dense", DenseConfig()))
            for d_ff in sorted(narrow):
                points.append(
                    Point(task, f"dense-narrow d_ff={d_ff}", "dense-narrow", DenseConfig(d_ff=d_ff))
                )
        points.extend(
            Point(task, label, fam, cfg, TABLE_LR_MULT.get(fam, 1.0)) for fam, label, cfg in lite
        )
    return points, skipped


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def _latency(layer: torch.nn.Module, d_model: int, tokens: int) -> tuple[float, float]:
    """(µs per token of ``layer`` in eval mode, dense-4d time / layer time), 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t_layer, t_dense = measure_pair(
            layer.eval(),
            dense_baseline(d_model, 4 * d_model),
            tokens,
            d_model,
            repeats=5,
            min_time=0.05,
        )
    finally:
        torch.set_num_threads(threads)
    return 1e6 * t_layer / tokens, t_dense / t_layer


def run_point(
    point: Point, out: Path, train_kwargs: dict[str, Any], latency_tokens: int
) -> dict[str, Any]:
    """Train one point (or resume it), then measure its FFN; returns the result row."""
    run_dir = out / point.task / _slug(point.label)
    kw = {k: v for k, v in train_kwargs.items() if k != "tiny"}
    if point.table_lr_mult != 1.0:
        tiny = train_kwargs.get("tiny")
        defaults = TrainConfig.tiny_preset(point.task) if tiny else TrainConfig(task=point.task)
        kw["table_lr"] = point.table_lr_mult * kw.get("lr", defaults.lr)
    if train_kwargs.get("tiny"):
        cfg = TrainConfig.tiny_preset(point.task, ffn=point.ffn, out_dir=str(run_dir), **kw)
    else:
        cfg = TrainConfig(task=point.task, ffn=point.ffn, out_dir=str(run_dir), **kw)
    summary = train(cfg, resume=True, progress=True)
    from liteffn.checkpoint import load_model

    model = load_model(run_dir / "checkpoints")
    layer = ffn_layers(model)[0]
    d_model = model.cfg.n_embd
    us, speedup = _latency(layer, d_model, latency_tokens)
    cost = layer.cost()
    dense_flops = 16 * d_model * d_model
    return {
        "task": point.task,
        "label": point.label,
        "family": point.family,
        "ffn": point.ffn.to_dict(),
        "d_model": d_model,
        "steps": summary["step"],
        "flops_per_token": cost.flops_per_token,
        "flops_vs_dense": dense_flops / cost.flops_per_token,
        "bytes_per_token": cost.bytes_per_token,
        "ffn_us_per_token": us,
        "ffn_speedup_vs_dense": speedup,
        "val_loss": summary.get("val_loss"),
        "val_ppl": summary.get("val_ppl"),
        "val_acc": summary.get("val_acc"),
        "train_seconds": summary["seconds"],
    }


def _load(results: Path) -> list[dict[str, Any]]:
    if not results.is_file():
        return []
    return [json.loads(ln) for ln in results.read_text().splitlines() if ln.strip()]


def run_sweep(
    points: Sequence[Point],
    out: Path,
    train_kwargs: dict[str, Any],
    *,
    latency_tokens: int = 256,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and measure every point not yet in ``out/results.jsonl``; return all rows."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {(r["task"], r["label"]) for r in _load(results)}
    for i, point in enumerate(points, 1):
        if (point.task, point.label) in done:
            log(f"[sweep] {i}/{len(points)} {point.task} {point.label}: already done")
            continue
        log(f"[sweep] {i}/{len(points)} {point.task} {point.label}")
        row = run_point(point, out, train_kwargs, latency_tokens)
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")
    return _load(results)


# -- report ---------------------------------------------------------------------------------


def _metric(row: dict[str, Any]) -> tuple[str, float]:
    if row["task"] == "vit":
        return "val acc %", 100 * row["val_acc"]
    return "val ppl", row["val_ppl"]


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each marked met / missed with the margin."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        trs = [r for r in rows if r["task"] == task]
        dense = next((r for r in trs if r["family"] == "dense"), None)
        narrow = {r["ffn"]["d_ff"]: r for r in trs if r["family"] == "dense-narrow"}
        if dense is None:
            continue
        name, base = _metric(dense)
        better = (lambda a, b: a > b) if task == "vit" else (lambda a, b: a < b)
        for r in trs:
            if r["family"] not in ("lookup", "fff", "lut"):
                continue
            _, m = _metric(r)
            d_ff = max(1, round(r["flops_per_token"] / (4 * r["d_model"])))
            if d_ff in narrow:
                _, mn = _metric(narrow[d_ff])
                ok = "met" if better(m, mn) else "missed"
                lines.append(
                    f"- {task} {r['label']}: {name} {m:.3f} vs dense narrowed to the same FLOPs "
                    f"(d_ff={d_ff}) {mn:.3f} -> better than narrowed dense: **{ok}**"
                )
            if task != "vit" and r["family"] == "lookup" and r["flops_vs_dense"] >= 6:
                ratio = m / base
                ok = "met" if ratio <= 1.05 else "missed"
                lines.append(
                    f"- {task} {r['label']}: {r['flops_vs_dense']:.1f}x fewer FFN FLOPs, ppl "
                    f"{ratio:.3f}x dense (target <= 1.05x): **{ok}**"
                )
            if task == "vit" and r["family"] == "lut":
                gap = base - m
                ok = "met" if gap <= 1.0 else "missed"
                lines.append(
                    f"- vit {r['label']}: accuracy {gap:+.2f} points below dense "
                    f"(target <= 1.0): **{ok}**"
                )
    return lines


def format_report(rows: list[dict[str, Any]], skipped: Sequence[str] = ()) -> str:
    """Markdown: machine header, one table per task, and the targets."""
    out = [
        f"CPU: {_sysinfo.cpu_model()}; torch threads for training: {torch.get_num_threads()}; "
        f"FFN latency at 1 thread, {rows[0]['d_model'] if rows else '?'}-wide, "
        f"commit {_sysinfo.git_commit()}",
        "",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        trs = [r for r in rows if r["task"] == task]
        name = _metric(trs[0])[0]
        dense = next((r for r in trs if r["family"] == "dense"), None)
        out += [
            f"### {task} ({trs[0]['steps']} steps)",
            "",
            f"| FFN | FFN FLOPs/token | FLOPs vs dense | FFN µs/token | speedup vs dense | "
            f"{name} | vs dense | train s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in sorted(trs, key=lambda r: -r["flops_per_token"]):
            m = _metric(r)[1]
            rel = "" if dense is None else f"{m / _metric(dense)[1]:.3f}x"
            out.append(
                f"| {r['label']} | {r['flops_per_token']:,} | {r['flops_vs_dense']:.1f}x | "
                f"{r['ffn_us_per_token']:.3f} | {r['ffn_speedup_vs_dense']:.2f}x | {m:.3f} | "
                f"{rel} | {r['train_seconds']:.0f} |"
            )
        out.append("")
    targets = _targets(rows)
    if targets:
        out += ["Targets:", "", *targets, ""]
    if skipped:
        out += [f"Not in this run (layer not available on this branch): {', '.join(skipped)}", ""]
    return "\n".join(out)


_STYLE = {
    "dense": ("k", "s"),
    "dense-narrow": ("0.5", "x"),
    "lookup": ("tab:blue", "o"),
    "fff": ("tab:orange", "^"),
    "lut": ("tab:green", "D"),
}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Quality vs FFN FLOPs/token and vs FFN latency, one row of panels per task (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.6 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        trs = [r for r in rows if r["task"] == task]
        name = _metric(trs[0])[0]
        for j, (key, xlabel) in enumerate(
            [("flops_per_token", "FFN FLOPs / token"), ("ffn_us_per_token", "FFN µs / token")]
        ):
            ax = axes[i][j]
            for fam, (color, marker) in _STYLE.items():
                pts = [r for r in trs if r["family"] == fam]
                if pts:
                    xs, ys = [r[key] for r in pts], [_metric(r)[1] for r in pts]
                    ax.scatter(xs, ys, c=color, marker=marker, label=fam)
                    for r, x, y in zip(pts, xs, ys, strict=True):
                        ax.annotate(
                            r["label"],
                            (x, y),
                            fontsize=6,
                            alpha=0.7,
                            xytext=(3, 3),
                            textcoords="offset points",
                        )
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(name)
            ax.set_title(f"{task}: {name} vs {xlabel}")
            ax.grid(True, alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
