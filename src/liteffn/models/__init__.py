"""Small transformers with a pluggable FFN: a masked-LM encoder (RoBERTa-style), a causal
decoder (GPT-style) and a ViT classifier. Every block's FFN is built from the config's
``ffn: FFNConfig``, so any liteffn layer family drops in.

Example:
    >>> from liteffn.config import LookupConfig
    >>> from liteffn.models import CausalLM, DecoderConfig
    >>> model = CausalLM(DecoderConfig(vocab_size=65, ffn=LookupConfig(num_tables=16)))
"""

from __future__ import annotations

from typing import Any

from torch import nn

from liteffn.models.common import Block, ModelConfig, SelfAttention, ffn_layers
from liteffn.models.decoder import CausalLM, DecoderConfig
from liteffn.models.encoder import EncoderConfig, MLMEncoder
from liteffn.models.vit import ViTClassifier, ViTConfig

__all__ = [
    "MODEL_TYPES",
    "Block",
    "CausalLM",
    "DecoderConfig",
    "EncoderConfig",
    "MLMEncoder",
    "ModelConfig",
    "SelfAttention",
    "ViTClassifier",
    "ViTConfig",
    "build_model",
    "ffn_layers",
    "model_config_from_dict",
]

# config kind -> (config class, model class)
MODEL_TYPES: dict[str, tuple[type[ModelConfig], type[nn.Module]]] = {
    "mlm": (EncoderConfig, MLMEncoder),
    "lm": (DecoderConfig, CausalLM),
    "vit": (ViTConfig, ViTClassifier),
}


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Inverse of ``ModelConfig.to_dict`` (the FFN config included)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[kind][0](**d)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model for ``cfg`` (an EncoderConfig, DecoderConfig or ViTConfig)."""
    for config_cls, model_cls in MODEL_TYPES.values():
        if type(cfg) is config_cls:
            return model_cls(cfg)
    raise TypeError(f"build_model: expected one of the model configs, got {type(cfg).__name__}")
