"""`liteffn train`: train a model with any FFN on an offline task (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from typing import Any

from liteffn.config import CONFIG_TYPES, FFNConfig, config_from_dict
from liteffn.tasks import TASKS

# TrainConfig fields exposed as --flags (name -> (type, help)).
_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "optimizer steps (default 2000; --tiny: 20)"),
    "batch_size": (int, "global batch (sequences or images), split across processes"),
    "block_size": (int, "text tasks: tokens per sequence (default 128)"),
    "n_layer": (int, "blocks (default: the task's size, 4)"),
    "n_head": (int, "attention heads (default 4)"),
    "n_embd": (int, "model width (default 128)"),
    "dropout": (float, "dropout (default 0)"),
    "lr": (float, "peak learning rate (default 1e-3)"),
    "table_lr": (float, "learning rate of LUT/LookupFFN tables (*.table, *.tables); default --lr"),
    "weight_decay": (float, "AdamW weight decay of 2-d non-table parameters (default 0.1)"),
    "warmup": (int, "linear warmup steps (default 100)"),
    "min_lr_ratio": (float, "cosine decays to this fraction of the peak (default 0.1)"),
    "grad_clip": (float, "clip the global gradient norm (0: off; default 1.0)"),
    "hardening": (float, "FFF leaf form: weight of the hardening (entropy) loss"),
    "eval_every": (int, "evaluate every N steps (and at the end)"),
    "eval_batches": (int, "validation batches (a fixed set)"),
    "ckpt_every": (int, "checkpoint every N steps (and at the end)"),
    "keep_checkpoints": (int, "checkpoints kept (default 2)"),
    "seed": (int, "seed (default 1337)"),
    "tokenizer": (str, "text tasks: char or bpe (default: bpe for mlm, char for lm)"),
    "bpe_vocab": (int, "BPE vocabulary size (default 2048)"),
    "mask_prob": (float, "mlm: fraction of positions predicted (default 0.15)"),
}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def ffn_from_args(kind: str, opts: list[str]) -> FFNConfig:
    """``--ffn lookup --ffn-opt num_tables=32`` -> LookupConfig(num_tables=32)."""
    d: dict[str, Any] = {"kind": kind}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep:
            raise ValueError(f"--ffn-opt expects KEY=VALUE, got {opt!r}")
        d[key.replace("-", "_")] = _value(value)
    return config_from_dict(d)


def build_config(args: argparse.Namespace):
    from liteffn.train import TrainConfig

    overrides = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    overrides["ffn"] = ffn_from_args(args.ffn, args.ffn_opt)
    overrides["out_dir"] = args.out or f"runs/{args.task}-{args.ffn}"
    if args.tiny:
        return TrainConfig.tiny_preset(args.task, **overrides)
    return TrainConfig(task=args.task, **overrides)


def run(args: argparse.Namespace) -> int:
    import torch

    from liteffn.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args)
    try:
        cfg.ffn.build(8)  # fail early, and clearly, when the family's layer is not installed
    except ImportError as exc:
        raise RuntimeError(f"the {cfg.ffn.kind!r} FFN is not available: {exc}") from exc
    summary = train(cfg, resume=args.resume, stop_after=args.stop_after, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    keys = ("step", "train_loss", "val_loss", "val_ppl", "val_acc", "items_per_s", "seconds")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from liteffn.train import TrainConfig

    assert set(_FLAGS) <= {f.name for f in fields(TrainConfig)}
    p = sub.add_parser(
        "train",
        help="train an encoder (mlm), decoder (lm) or ViT (vit) with any FFN",
        description="Train from scratch on offline data (Shakespeare, Fashion-MNIST). Writes "
        "OUT/metrics.jsonl, OUT/checkpoints/ (safetensors + JSON, atomic) and OUT/summary.json. "
        "Run under `torchrun --nproc_per_node N -m liteffn train ...` for DDP (gloo).",
    )
    p.add_argument("task", choices=TASKS, help="mlm: masked-LM encoder, lm: causal decoder, vit")
    p.add_argument("--ffn", default="dense", choices=sorted(CONFIG_TYPES), help="FFN family")
    p.add_argument(
        "--ffn-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an FFN config field, e.g. num_tables=32, depth=5, hidden_luts=[512] (repeatable)",
    )
    p.add_argument("--out", help="run folder (default runs/TASK-FFN)")
    p.add_argument("--tiny", action="store_true", help="a run of seconds (tests, smoke checks)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after step N")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, (typ, text) in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=text)
    p.set_defaults(func=run)
