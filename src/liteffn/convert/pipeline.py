"""The whole conversion of a pretrained model, as ``liteffn convert`` and ``liteffn demo`` run it:
load, convert, distil on calibration text, save, reload, then measure FFN FLOPs, parameters,
fidelity and end-to-end speed against the original. Returns a report (a dict) that
``format_report`` prints and ``plot_report`` draws.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liteffn.convert import evaluate as ev
from liteffn.convert._convert import convert_, ffn_flops, lite_layers
from liteffn.convert.budget import config_for_budget, parse_budget
from liteffn.convert.distill import distill_, remove_checkpoint
from liteffn.convert.handlers import handler_for
from liteffn.convert.io import from_pretrained, save_pretrained

__all__ = ["EFFORTS", "Effort", "convert_pretrained", "format_report", "plot_report"]


@dataclass(frozen=True)
class Effort:
    """How much calibration and distillation a conversion gets."""

    calib_texts: int
    layer_steps: int
    e2e_steps: int
    token_batch: int = 1024
    layer_lr: float = 3e-3
    e2e_lr: float = 3e-4
    fit: str = "auto"  # closed-form ridge fit where the layer has one (distill_), else Adam
    sweeps: int = 4
    ridge: float = 1.0


EFFORTS = {
    "demo": Effort(calib_texts=256, layer_steps=200, e2e_steps=40),
    "quick": Effort(calib_texts=256, layer_steps=300, e2e_steps=0),
    "standard": Effort(calib_texts=1024, layer_steps=1000, e2e_steps=200),
    "full": Effort(calib_texts=4096, layer_steps=3000, e2e_steps=1000),
}


def _is_causal_lm(model: nn.Module) -> bool:
    get = getattr(model, "get_output_embeddings", None)
    return get is not None and get() is not None


def _params(model: nn.Module) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            n += p.numel()
    return n


@contextlib.contextmanager
def _locked(path: str | None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (so benchmarks on a shared machine do not overlap)."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(f"[liteffn convert] {msg}", flush=True)


def convert_pretrained(
    model_name: str,
    method: str,
    out: str | Path,
    *,
    budget: str | float = "4x",
    effort: str | Effort = "standard",
    layer_args: dict[str, Any] | None = None,
    eval_texts: int = 512,
    probe_train: int = 600,
    eval_tokens: int = 8192,
    speed: bool = True,
    speed_lock: str | None = None,
    seed: int = 0,
    progress: bool = True,
    sequential: bool = True,
) -> dict[str, Any]:
    """Convert ``model_name`` ("minilm", "smollm2" or a local path) with ``method`` at FFN
    FLOPs ``budget`` (e.g. "4x"), distil with ``effort``, save to ``out``, and measure."""
    from liteffn.data.news import load_bbc_news, news_paragraphs
    from liteffn.data.pretrained import load_pretrained

    eff = EFFORTS[effort] if isinstance(effort, str) else effort
    cut = parse_budget(budget)
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    _say(f"loading {model_name}")
    model, tok = load_pretrained(model_name)
    if tok is None:
        raise ValueError(f"{model_name}: no tokenizer found; text conversion needs one")
    causal = _is_causal_lm(model)
    handler = handler_for(model)
    spec = handler.spec(next(iter(handler.blocks(model)))[1])
    config = config_for_budget(method, spec, cut, **(layer_args or {}))
    _say(f"{handler.name} model, FFN {spec}; replacing every FFN with {config}")
    teacher = copy.deepcopy(model).eval()
    convert_(model, config)

    calib = news_paragraphs("train")
    rng.shuffle(calib)
    t0 = time.perf_counter()
    rep = distill_(
        model,
        teacher,
        calib[: eff.calib_texts],
        tokenizer=tok,
        max_length=128,
        layer_steps=eff.layer_steps,
        layer_lr=eff.layer_lr,
        token_batch=eff.token_batch,
        e2e_steps=eff.e2e_steps,
        e2e_lr=eff.e2e_lr,
        sequential=sequential,
        fit=eff.fit,
        sweeps=eff.sweeps,
        ridge=eff.ridge,
        checkpoint=Path(out).with_name(Path(out).name + ".distill.pt"),  # resumable
        progress=progress,
        seed=seed,
    )
    distill_s = time.perf_counter() - t0
    ckpt = Path(out).with_name(Path(out).name + ".distill.pt")
    out = save_pretrained(model, out, tokenizer=tok)
    remove_checkpoint(ckpt)  # kept only to resume an interrupted distillation
    converted = from_pretrained(out)
    _say(f"saved to {out} and reloaded")

    held = news_paragraphs("test")
    report: dict[str, Any] = {
        "model": str(model_name),
        "kind": "causal-lm" if causal else "encoder",
        "method": method,
        "config": config.to_dict(),
        "budget_cut": cut,
        "effort": asdict(eff),
        "threads": torch.get_num_threads(),
        "sequential": sequential,
        "out": str(out),
    }
    dense_f, lite_f = ffn_flops(converted)
    report["ffn_flops"] = {"original": dense_f, "converted": lite_f}
    ffn_dense_params = sum(
        (3 if s["gated"] else 2) * s["d_model"] * s["d_ff"]
        for s in converted.liteffn_record["sites"].values()
    )
    ffn_lite_params = sum(_params(m) for m in lite_layers(converted).values())
    report["params"] = {
        "original": _params(teacher),
        "converted": _params(converted),
        "ffn_original": ffn_dense_params,
        "ffn_converted": ffn_lite_params,
    }
    report["distill"] = {
        "seconds": distill_s,
        "layer_rel_mse": {k: v["rel_mse_after"] for k, v in rep["layers"].items()},
        "e2e_loss_first_last": (
            [rep["e2e_losses"][0], rep["e2e_losses"][-1]] if rep["e2e_losses"] else None
        ),
    }

    # saved and reloaded model == the model in memory
    probe_batch = tok(held[:4], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        key = "logits" if causal else "last_hidden_state"
        a = getattr(model.eval()(**probe_batch), key)
        b = getattr(converted(**probe_batch), key)
    report["reload_max_abs_diff"] = float((a - b).abs().max())
    del model

    _say("measuring fidelity on held-out text")
    if causal:
        text = "\n\n".join(held)
        ppl_t = ev.perplexity(teacher, tok, text, max_tokens=eval_tokens)
        ppl_s = ev.perplexity(converted, tok, text, max_tokens=eval_tokens)
        report["fidelity"] = {"perplexity": {"original": ppl_t, "converted": ppl_s}}
    else:
        texts = held[:eval_texts]
        cos = ev.embedding_cosine(ev.encode(teacher, tok, texts), ev.encode(converted, tok, texts))
        tr, te = load_bbc_news("train"), load_bbc_news("test")
        acc = {}
        for name, m in (("original", teacher), ("converted", converted)):
            xtr = ev.encode(m, tok, tr.texts[:probe_train])
            xte = ev.encode(m, tok, te.texts)
            acc[name] = ev.linear_probe(xtr, tr.labels[:probe_train], xte, te.labels)
        report["fidelity"] = {"embedding_cosine": cos, "probe_accuracy": acc}

    if speed:
        _say("measuring end-to-end speed (original vs converted, interleaved)")
        models = {"original": teacher, "converted": converted}
        with _locked(speed_lock):
            if causal:
                report["speed"] = ev.time_decode(models, tok, "\n\n".join(held))
            else:
                secs = ev.time_encode(models, tok, held)
                report["speed"] = {k: {"encode_32x128_s": v} for k, v in secs.items()}
    report["seconds"] = time.perf_counter() - t_start
    (Path(out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# -- report -------------------------------------------------------------------------------------


def _bar(frac: float, width: int = 30) -> str:
    n = max(0, min(width, round(frac * width)))
    return "#" * n + "." * (width - n)


def _rows(report: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(metric, original, converted, how to read the ratio)."""
    rows = [
        ("FFN GFLOPs/token", report["ffn_flops"]["original"] / 1e9,
         report["ffn_flops"]["converted"] / 1e9, "lower"),
        ("params (M)", report["params"]["original"] / 1e6, report["params"]["converted"] / 1e6,
         "lower"),
        ("FFN params (M)", report["params"]["ffn_original"] / 1e6,
         report["params"]["ffn_converted"] / 1e6, "lower"),
    ]  # fmt: skip
    fid = report["fidelity"]
    if "perplexity" in fid:
        p = fid["perplexity"]
        rows.append(("held-out perplexity", p["original"], p["converted"], "lower"))
    else:
        a = fid["probe_accuracy"]
        rows.append(("BBC news probe accuracy", a["original"], a["converted"], "higher"))
    sp = report.get("speed")
    if sp and "prefill_s" in sp["original"]:
        rows.append(("prefill 256 tok (s)", sp["original"]["prefill_s"],
                     sp["converted"]["prefill_s"], "lower"))  # fmt: skip
        rows.append(("decode tokens/s", sp["original"]["decode_tok_s"],
                     sp["converted"]["decode_tok_s"], "higher"))  # fmt: skip
    elif sp:
        rows.append(("encode 32x128 (s)", sp["original"]["encode_32x128_s"],
                     sp["converted"]["encode_32x128_s"], "lower"))  # fmt: skip
    return rows


def _targets(report: dict[str, Any]) -> list[str]:
    """The issue's targets, met or missed."""
    out = []
    f = report["ffn_flops"]
    cut = f["original"] / max(f["converted"], 1)
    out.append(f"FFN FLOPs cut {cut:.1f}x (target >= 4x): {'met' if cut >= 4 else 'MISSED'}")
    fid, sp = report["fidelity"], report.get("speed")
    if "perplexity" in fid:
        r = fid["perplexity"]["converted"] / fid["perplexity"]["original"]
        out.append(f"perplexity {r:.3f}x original (target <= 1.25x): "
                   f"{'met' if r <= 1.25 else 'MISSED'}")  # fmt: skip
        if sp:
            s = sp["converted"]["decode_tok_s"] / sp["original"]["decode_tok_s"]
            out.append(
                f"decode {s:.2f}x tokens/s (target >= 1.5x): {'met' if s >= 1.5 else 'MISSED'}"
            )
    else:
        c = fid["embedding_cosine"]
        out.append(
            f"mean embedding cosine {c:.4f} (target >= 0.97): {'met' if c >= 0.97 else 'MISSED'}"
        )
        if sp:
            s = sp["original"]["encode_32x128_s"] / sp["converted"]["encode_32x128_s"]
            out.append(
                f"encoding {s:.2f}x faster (target >= 1.5x): {'met' if s >= 1.5 else 'MISSED'}"
            )
    return out


def format_report(report: dict[str, Any]) -> str:
    """The report as text: a table, bars of converted / original, and the targets."""
    lines = [
        f"liteffn convert: {report['model']} ({report['kind']}), method {report['method']} "
        f"{report['config']}",
        f"threads {report['threads']}, saved to {report['out']}, "
        f"reload max |diff| {report['reload_max_abs_diff']:.2e}, "
        f"distillation {report['distill']['seconds']:.0f} s, total {report['seconds']:.0f} s",
        "",
        f"| {'metric':<24} | {'original':>12} | {'converted':>12} | {'ratio':>7} |",
        f"| {'-' * 24} | {'-' * 12}: | {'-' * 12}: | {'-' * 7}: |",
    ]
    rows = _rows(report)
    for name, a, b, _ in rows:
        lines.append(f"| {name:<24} | {a:>12.4g} | {b:>12.4g} | {b / a if a else 0:>6.3g}x |")
    if "embedding_cosine" in report["fidelity"]:
        lines.append(f"| {'mean embedding cosine':<24} | {1.0:>12.4g} | "
                     f"{report['fidelity']['embedding_cosine']:>12.4f} | {'':>7} |")  # fmt: skip
    lines += ["", "converted / original:"]
    for name, a, b, better in rows:
        r = b / a if a else 0.0
        lines.append(f"  {name:<24} {_bar(min(r, 2.0) / 2.0)} {r:6.3f}x ({better} is better)")
    lines += ["", "targets (issue 7):", *[f"  {t}" for t in _targets(report)]]
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path) -> Path | None:
    """Bar chart of converted / original per metric (needs matplotlib; None without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = _rows(report)
    names = [r[0] for r in rows]
    ratios = [r[2] / r[1] if r[1] else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    ax.barh(names[::-1], ratios[::-1], color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("converted / original")
    ax.set_title(f"{report['model']}: {report['method']} ({report['budget_cut']:g}x FFN budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
