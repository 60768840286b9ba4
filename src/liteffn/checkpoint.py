"""Checkpoints: a folder per step with ``model.safetensors`` (weights), ``config.json`` (model and
training configs) and ``trainer.pt`` (optimizer, step, RNG states), written into a temporary
folder and renamed into place, then published by atomically rewriting the ``latest`` pointer.
A crash at any moment leaves the previous checkpoint intact and ``latest`` pointing to it.

Example:
    >>> model = load_model("runs/lm/checkpoints/latest")     # or a checkpoint's folder
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from liteffn.models import build_model, model_config_from_dict

__all__ = ["latest_checkpoint", "load_model", "save_checkpoint", "write_atomic"]

WEIGHTS, CONFIG, TRAINER, LATEST = "model.safetensors", "config.json", "trainer.pt", "latest"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    root: Path, step: int, model: nn.Module, config: dict[str, Any], trainer: dict, keep: int = 2
) -> Path:
    """Write checkpoint ``root/step_XXXXXXX`` atomically, point ``root/latest`` at it and keep
    only the newest ``keep`` checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        save_file(_weights(model), str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        torch.save(trainer, tmp / TRAINER)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    write_atomic(root / LATEST, final.name + "\n")
    old = sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep] if keep > 0 else []
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` points at, or None when there is none yet."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{pointer} points at {path}, which has no {WEIGHTS}")
    return path


def load_model(path: str | os.PathLike) -> nn.Module:
    """The model saved in a checkpoint folder (or in the checkpoint ``latest`` names when
    ``path`` is a checkpoints root or its ``latest`` file), in eval mode."""
    path = Path(path)
    if path.name == LATEST:
        path = path.parent
    if not (path / WEIGHTS).is_file():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no {WEIGHTS} and no {LATEST} pointer in {path}")
        path = found
    config = json.loads((path / CONFIG).read_text())
    model = build_model(model_config_from_dict(config["model"]))
    model.load_state_dict(load_file(str(path / WEIGHTS)))
    return model.eval()
