"""Save and load converted models: ``config.json`` (the Hugging Face config), ``model.safetensors``
(all weights, lite layers included) and ``liteffn.json`` (what was swapped, with which config,
and the weights file's size and SHA-256).

Writes are atomic (a temporary folder renamed into place); a load checks the record, the
file's size and hash, then every tensor name and shape before returning, so a truncated,
corrupted or mismatched save gives a clear error and never a half-loaded model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

from liteffn.convert._convert import FORMAT_VERSION, _reinstall, record_of

__all__ = ["CheckpointError", "from_pretrained", "save_pretrained"]

RECORD_FILE = "liteffn.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MAGIC = "liteffn-converted"


class CheckpointError(ValueError):
    """A saved converted model is missing, truncated, corrupted or does not match its record."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pretrained(model: nn.Module, directory: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Save a model converted by ``convert_`` to ``directory`` (created or replaced atomically);
    ``tokenizer`` (optional) is saved alongside. Returns the directory."""
    record = record_of(model)
    if not record:
        raise ValueError("save_pretrained: the model was not converted by liteffn.convert_")
    if not hasattr(model, "config") or not hasattr(model.config, "to_json_string"):
        raise TypeError(
            f"save_pretrained: expected a Hugging Face model with .config, got {type(model)}"
        )
    from liteffn import __version__

    final = Path(directory).expanduser().resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        (tmp / CONFIG_FILE).write_text(model.config.to_json_string())
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "magic": MAGIC})
        weights = tmp / WEIGHTS_FILE
        meta = {
            "magic": MAGIC,
            "liteffn_version": __version__,
            **record,
            "weights": {
                "file": WEIGHTS_FILE,
                "bytes": weights.stat().st_size,
                "sha256": _sha256(weights),
            },
        }
        (tmp / RECORD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        old = None
        if final.exists():  # swap: old out of the way, new in, then delete old
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _read_record(d: Path) -> dict[str, Any]:
    path = d / RECORD_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{d} is not a liteffn-converted model: {RECORD_FILE} is missing "
            f"(expected {CONFIG_FILE}, {WEIGHTS_FILE} and {RECORD_FILE})"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
        raise CheckpointError(f"{path}: expected magic {MAGIC!r}, got {meta.get('magic')!r}")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {meta.get('format')!r}, this liteffn reads {FORMAT_VERSION}"
        )
    for key in ("architecture", "model_class", "sites", "weights"):
        if key not in meta:
            raise CheckpointError(f"{path}: field {key!r} is missing")
    return meta


def _check_weights(d: Path, meta: dict[str, Any]) -> Path:
    w = d / meta["weights"]["file"]
    if not w.is_file():
        raise CheckpointError(f"{w}: weights file is missing")
    size, want = w.stat().st_size, meta["weights"]["bytes"]
    if size != want:
        raise CheckpointError(f"{w}: expected {want} bytes, got {size} (truncated or replaced?)")
    digest = _sha256(w)
    if digest != meta["weights"]["sha256"]:
        raise CheckpointError(
            f"{w}: SHA-256 {digest[:16]}... does not match the recorded "
            f"{meta['weights']['sha256'][:16]}... (the file is corrupted or was replaced)"
        )
    return w


def from_pretrained(directory: str | os.PathLike) -> nn.Module:
    """Load a model saved by ``save_pretrained``: the same Hugging Face class, lite FFNs in place,
    in eval mode. Raises ``CheckpointError`` when anything is missing, corrupted or mismatched."""
    from liteffn.data.pretrained import _transformers

    d = Path(directory).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"from_pretrained: no such directory: {d}")
    meta = _read_record(d)
    weights = _check_weights(d, meta)
    tf = _transformers()
    cls = getattr(tf, meta["model_class"], None)
    if not isinstance(cls, type):
        raise CheckpointError(
            f"model class {meta['model_class']!r} is not in this transformers ({tf.__version__})"
        )
    try:
        config = tf.AutoConfig.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{d / CONFIG_FILE}: cannot be read as a model config: {exc}"
        ) from exc
    model = cls(config)
    record = {k: meta[k] for k in ("format", "architecture", "model_class", "sites")}
    try:
        _reinstall(model, record)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{d}: the record does not fit the model: {exc}") from exc
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file: {exc}") from exc
    _load_checked(model, tensors, weights)
    return model.eval()


def _load_checked(model: nn.Module, tensors: dict, path: Path) -> None:
    """Copy ``tensors`` into ``model`` after checking names and shapes (tied weights saved once)."""
    state = model.state_dict()
    by_ptr: dict[int, list[str]] = {}
    for k, v in state.items():  # group names sharing storage: one of each group is saved
        by_ptr.setdefault(v.data_ptr(), []).append(k)
    missing = [ks[0] for ks in by_ptr.values() if not any(k in tensors for k in ks)]
    unexpected = sorted(set(tensors) - set(state))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not match the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        )
    for k, v in tensors.items():
        if state[k].shape != v.shape or state[k].dtype != v.dtype:
            raise CheckpointError(
                f"{path}: tensor {k!r}: the model expects {tuple(state[k].shape)} "
                f"{state[k].dtype}, the file has {tuple(v.shape)} {v.dtype}"
            )
    import torch

    with torch.no_grad():
        for k, v in tensors.items():
            state[k].copy_(v)
