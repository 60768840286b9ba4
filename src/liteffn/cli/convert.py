"""`liteffn convert`: swap a pretrained model's FFNs for lite layers, distil, save, and report."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json

from liteffn.config import CONFIG_TYPES


def _layer_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--layer-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a plain string such as projection=dense
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from liteffn.convert.pipeline import EFFORTS, convert_pretrained, format_report

    if args.threads:
        torch.set_num_threads(args.threads)
    effort = EFFORTS[args.effort]
    overrides = {
        "calib_texts": args.calib,
        "layer_steps": args.layer_steps,
        "e2e_steps": args.e2e_steps,
        "fit": args.fit,
        "sweeps": args.sweeps,
        "ridge": args.ridge,
    }
    effort = dataclasses.replace(effort, **{k: v for k, v in overrides.items() if v is not None})
    report = convert_pretrained(
        args.model,
        args.method,
        args.out,
        budget=args.budget,
        effort=effort,
        layer_args=_layer_args(args.layer_arg),
        eval_texts=args.eval_texts,
        eval_tokens=args.eval_tokens,
        sequential=not args.teacher_forced,
        probe_train=args.probe_train,
        speed=not args.no_speed,
        speed_lock=args.speed_lock,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.add_argument(
        "--speed-lock",
        metavar="PATH",
        help="hold an flock on PATH while timing (e.g. /tmp/liteffn-bench.lock)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    from liteffn.convert.pipeline import EFFORTS

    p = sub.add_parser(
        "convert",
        help="convert a pretrained Hugging Face model: lite FFNs, distilled, saved, measured",
        description="Replace every FFN of a pretrained model with a lite layer sized to an FFN "
        "FLOPs budget, fit the new layers to the original FFNs on calibration text "
        "(layer by layer, then end to end), save the result, and report FFN FLOPs, parameters, "
        "fidelity and end-to-end CPU speed against the original.",
    )
    p.add_argument(
        "--model", required=True, help="minilm, smollm2, or a local model folder / .gguf"
    )
    p.add_argument("--method", required=True, choices=sorted(CONFIG_TYPES), help="layer family")
    p.add_argument("--out", required=True, help="directory for the converted model")
    p.add_argument(
        "--budget",
        default="4x",
        help="FFN FLOPs budget: a cut factor ('4x') or a fraction of dense ('0.25'); default 4x",
    )
    p.add_argument(
        "--effort", default="standard", choices=list(EFFORTS), help="calibration / training size"
    )
    p.add_argument("--calib", type=int, help="calibration texts (overrides --effort)")
    p.add_argument("--layer-steps", type=int, help="layer-wise steps per layer (overrides)")
    p.add_argument("--e2e-steps", type=int, help="end-to-end steps (overrides)")
    p.add_argument(
        "--fit",
        choices=["auto", "lstsq", "adam"],
        help="layer-wise fit: closed-form ridge least squares where the layer has one (auto, "
        "the default), only that (lstsq), or Adam steps (adam)",
    )
    p.add_argument("--sweeps", type=int, help="least-squares backfitting sweeps per layer")
    p.add_argument("--ridge", type=float, help="least-squares shrinkage (pseudo-tokens per row)")
    p.add_argument(
        "--layer-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a layer config field, e.g. depth=3 or projection=dense (repeatable)",
    )
    p.add_argument("--eval-texts", type=int, default=512, help="held-out texts for the cosine")
    p.add_argument(
        "--eval-tokens", type=int, default=8192, help="held-out tokens for the perplexity"
    )
    p.add_argument(
        "--teacher-forced",
        action="store_true",
        help="record every layer's inputs in one teacher pass (faster for deep models) instead "
        "of layer by layer through the partly converted student",
    )
    p.add_argument("--probe-train", type=int, default=600, help="articles to fit the probe on")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    add_common(p)
    p.set_defaults(func=run)
