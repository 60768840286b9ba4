"""Train a model with any FFN on one of the offline tasks: AdamW with parameter groups, linear
warmup then cosine decay, gradient clipping, periodic evaluation, atomic checkpoints, exact
resume, JSONL metrics and a progress bar. Runs under ``torchrun`` with DDP (gloo on CPU).

Parameter groups (``param_groups``):
    * ``tables``: parameters named ``table`` (LUT truth tables) or ``tables``
      (LookupFFN tables); learning rate ``table_lr`` (default: ``lr``), no weight decay. After
      each step LUT truth tables (``.table``) are clamped to [-1, 1], their defined range.
    * ``decay``: every other parameter with 2+ dimensions (weights, embeddings); ``weight_decay``.
    * ``no_decay``: biases, norms, thresholds and other 1-d parameters; no weight decay.

Determinism: seeds are fixed (model init ``seed``, batch sampling ``seed+1``, dropout
``seed+2+rank``); a checkpoint stores the optimizer, the step, the batch generator and every
rank's RNG state, so a resumed run continues exactly as if it had never stopped.

Example:
    >>> from liteffn.train import TrainConfig, train
    >>> summary = train(TrainConfig.tiny_preset("lm", out_dir="runs/tiny-lm"))
    >>> summary["val_ppl"]
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from liteffn.checkpoint import CONFIG, TRAINER, WEIGHTS, latest_checkpoint, save_checkpoint
from liteffn.config import DenseConfig, FFNConfig, config_from_dict
from liteffn.models import build_model, ffn_layers
from liteffn.tasks import TASKS, make_task

__all__ = ["TrainConfig", "lr_scale", "param_groups", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the same config + seed gives the same run)."""

    task: str = "lm"
    ffn: FFNConfig = field(default_factory=DenseConfig)
    out_dir: str = "runs/run"
    steps: int = 2000
    batch_size: int = 32  # global: split evenly across DDP processes
    block_size: int = 128  # text tasks: tokens per sequence
    n_layer: int | None = None  # None: the task's default size
    n_head: int | None = None
    n_embd: int | None = None
    dropout: float = 0.0
    lr: float = 1e-3
    table_lr: float | None = None
    weight_decay: float = 0.1
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    hardening: float = 0.0  # FFF leaf form: weight of the entropy hardening loss
    eval_every: int = 250
    eval_batches: int = 16
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 1337
    tokenizer: str = ""  # text tasks: "char" or "bpe"; "" = bpe for mlm, char for lm
    bpe_vocab: int = 2048
    mask_prob: float = 0.15
    tiny: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.ffn, dict):
            object.__setattr__(self, "ffn", config_from_dict(self.ffn))
        checks = [
            (self.task in TASKS, f"task must be one of {list(TASKS)}, got {self.task!r}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.table_lr is None or self.table_lr > 0, f"table_lr must be > 0: {self.table_lr}"),
            (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1]: {self.min_lr_ratio}"),
            (self.eval_every >= 1 and self.ckpt_every >= 1, "eval_every, ckpt_every must be >= 1"),
            (self.eval_batches >= 1, f"eval_batches must be >= 1, got {self.eval_batches}"),
            (isinstance(self.ffn, FFNConfig), f"ffn must be an FFNConfig, got {self.ffn!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")

    @classmethod
    def tiny_preset(cls, task: str, **overrides: Any) -> TrainConfig:
        """A run that takes seconds: a 2-layer, 32-wide model on a slice of the data."""
        base = dict(
            task=task,
            steps=20,
            batch_size=8,
            block_size=32,
            warmup=4,
            eval_every=10,
            eval_batches=2,
            ckpt_every=10,
            tiny=True,
            bpe_vocab=512,
            lr=3e-3,
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "ffn": self.ffn.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "ffn": config_from_dict(d["ffn"])})


# -- optimisation ---------------------------------------------------------------------------


def param_groups(
    model: nn.Module, lr: float, table_lr: float | None, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups (see the module docstring); empty groups are left out."""
    groups: dict[str, list[nn.Parameter]] = {"tables": [], "decay": [], "no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.rsplit(".", 1)[-1] in ("table", "tables"):
            groups["tables"].append(p)
        elif p.dim() >= 2:
            groups["decay"].append(p)
        else:
            groups["no_decay"].append(p)
    settings = {
        "tables": (table_lr or lr, 0.0),
        "decay": (lr, weight_decay),
        "no_decay": (lr, 0.0),
    }
    return [
        {
            "name": k,
            "params": ps,
            "lr": settings[k][0],
            "base_lr": settings[k][0],
            "weight_decay": settings[k][1],
        }
        for k, ps in groups.items()
        if ps
    ]


def lr_scale(step: int, cfg: TrainConfig) -> float:
    """Multiplier of every group's base learning rate at ``step`` (0-based): linear warmup over
    ``warmup`` steps, then cosine decay to ``min_lr_ratio`` at the last step."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _clamp_tables(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "table":
                p.clamp_(-1.0, 1.0)


def _aux_loss(model: nn.Module, cfg: TrainConfig) -> torch.Tensor | None:
    """The FFF leaf form's hardening loss, summed over layers, times ``cfg.hardening``."""
    if cfg.hardening <= 0:
        return None
    terms = [f.hardening_loss() for f in ffn_layers(model) if getattr(f, "leaf_width", 0) > 0]
    return cfg.hardening * sum(terms) if terms else None


# -- distributed ----------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owned: bool = False  # we initialised the process group, so we tear it down

    @classmethod
    def setup(cls) -> _Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        owned = not dist.is_initialized()
        if owned:
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owned)

    def sum(self, *values: float) -> list[float]:
        """Sum each value over all processes (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


# -- the loop -------------------------------------------------------------------------------


@torch.no_grad()
def _evaluate(model: nn.Module, task, batches, d: _Dist) -> dict[str, float]:
    """Validation metrics on this rank's share of the fixed batches, summed over ranks. The
    model runs in eval mode: the lite FFNs take their hard inference path (native kernels)."""
    was_training = model.training
    model.eval()
    loss, count, correct = 0.0, 0, 0
    for x, y in batches[d.rank :: d.world]:
        logits, _ = model(x)
        ls, n, k = task.loss_sum(logits, y)
        loss, count, correct = loss + float(ls), count + n, correct + k
    loss, count, correct = d.sum(loss, count, correct)
    model.train(was_training)
    mean = loss / max(count, 1)
    out = {"val_loss": mean, "val_acc": correct / max(count, 1)}
    if task.kind != "vit":
        out["val_ppl"] = math.exp(min(mean, 50.0))
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (by a run that stopped before its next save)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in kept))


def _check_same_run(saved: dict[str, Any], cfg: TrainConfig, where: Path) -> None:
    now = cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k != "out_dir" and saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume from {where}: the config differs ({details})")


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the training run ``cfg``; return its final metrics.

    ``stop_after`` stops once that many steps are done, saving a checkpoint, as if interrupted.
    Writes ``out_dir/metrics.jsonl``, ``out_dir/checkpoints/`` and ``out_dir/summary.json``.
    """
    d = _Dist.setup()
    try:
        return _train(cfg, d, resume, stop_after, progress)
    finally:
        d.close()


def _train(cfg, d: _Dist, resume, stop_after, progress) -> dict[str, Any]:
    if cfg.batch_size % d.world:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be divisible by the {d.world} processes"
        )
    out = Path(cfg.out_dir)
    ckpt_root, metrics_path = out / "checkpoints", out / "metrics.jsonl"
    found = latest_checkpoint(ckpt_root)
    if found is not None and not resume:
        raise ValueError(
            f"{out} already holds a run ({found.name}); resume it or pick a new out_dir"
        )

    task = make_task(cfg.task, tiny=cfg.tiny, **_task_kwargs(cfg))
    size = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd") if getattr(cfg, k)}
    model_cfg = task.model_config(cfg.ffn, cfg.tiny, dropout=cfg.dropout, **size)
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    model.train()
    opt = torch.optim.AdamW(
        param_groups(model, cfg.lr, cfg.table_lr, cfg.weight_decay), betas=(0.9, 0.95)
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch sampling: the same on all ranks
    torch.manual_seed(cfg.seed + 2 + d.rank)  # dropout
    config_json = {"train": cfg.to_dict(), "model": model_cfg.to_dict()}
    start = 0
    if found is not None:
        saved = json.loads((found / CONFIG).read_text())
        _check_same_run(saved["train"], cfg, found)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(found / WEIGHTS)))
        state = torch.load(found / TRAINER, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["rng"][d.rank])
        start = int(state["step"])
        summary_path = out / "summary.json"
        if start >= cfg.steps and summary_path.is_file():  # nothing left to do
            return json.loads(summary_path.read_text())
        if d.rank == 0:
            _truncate_metrics(metrics_path, start)
    if d.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    ddp = model
    if d.world > 1:
        ddp = nn.parallel.DistributedDataParallel(model)
    eval_set = task.eval_batches(cfg.eval_batches, max(1, cfg.batch_size))
    local = cfg.batch_size // d.world
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not progress or d.rank != 0,
        desc=f"{cfg.task}/{cfg.ffn.kind}",
        dynamic_ncols=True,
    )
    metrics = open(metrics_path, "a") if d.rank == 0 else None  # noqa: SIM115
    last: dict[str, Any] = {}
    t0, items = time.perf_counter(), 0
    try:
        for step in range(start, cfg.steps):
            scale = lr_scale(step, cfg)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            x, y = task.train_batch(cfg.batch_size, gen)  # the global batch
            x, y = (
                x[d.rank * local : (d.rank + 1) * local],
                y[d.rank * local : (d.rank + 1) * local],
            )
            logits, _ = ddp(x)
            loss_sum, count, _ = task.loss_sum(logits, y)
            (total,) = d.sum(count)
            # DDP averages gradients over ranks: scale so the result is the global-batch mean
            loss = loss_sum * (d.world / max(total, 1))
            aux = _aux_loss(model, cfg)
            if aux is not None:
                loss = loss + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = (
                float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                if cfg.grad_clip > 0
                else 0.0
            )
            opt.step()
            _clamp_tables(model)
            (train_loss,) = d.sum(float(loss_sum.detach()))
            done = step + 1
            items += total
            last = {
                "step": done,
                "train_loss": train_loss / max(total, 1),
                "lr": cfg.lr * scale,
                "grad_norm": gnorm,
            }
            if done % cfg.eval_every == 0 or done == cfg.steps:
                last.update(_evaluate(model, task, eval_set, d))
            if metrics:
                metrics.write(json.dumps(last) + "\n")
                metrics.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{last['train_loss']:.3f}")
            stopping = stop_after is not None and done >= stop_after
            if done % cfg.ckpt_every == 0 or done == cfg.steps or stopping:
                rng = d.gather(torch.get_rng_state())
                if d.rank == 0:
                    trainer = {
                        "optimizer": opt.state_dict(),
                        "step": done,
                        "generator": gen.get_state(),
                        "rng": rng,
                    }
                    save_checkpoint(
                        ckpt_root, done, model, config_json, trainer, cfg.keep_checkpoints
                    )
                d.barrier()
            if stopping:
                break
    finally:
        bar.close()
        if metrics:
            metrics.close()
    seconds = time.perf_counter() - t0
    summary = {
        **last,
        "items_per_s": items / max(seconds, 1e-9),
        "seconds": seconds,
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
    }
    if d.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _task_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.task == "vit":
        return {}
    return {
        "tokenizer": cfg.tokenizer,
        "bpe_vocab": cfg.bpe_vocab,
        "block_size": cfg.block_size,
        "mask_prob": cfg.mask_prob,
    }
