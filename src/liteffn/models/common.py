"""What the three models share: multi-head self-attention, the pre-LN block with a pluggable
FFN, and typed model configs that carry an ``FFNConfig`` and round-trip through JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from liteffn.config import DenseConfig, FFNConfig, config_from_dict

__all__ = ["Block", "ModelConfig", "SelfAttention", "ffn_layers", "init_weights"]


@dataclass(frozen=True)
class ModelConfig:
    """Fields every model has; subclasses add their own. ``ffn`` picks the FFN of every block."""

    kind: ClassVar[str] = ""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    ffn: FFNConfig = field(default_factory=DenseConfig)

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("n_layer", "n_head", "n_embd"):
            if getattr(self, f) < 1:
                raise ValueError(f"{name}: {f} must be >= 1, got {getattr(self, f)}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"{name}: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.ffn, dict):
            object.__setattr__(self, "ffn", config_from_dict(self.ffn))
        if not isinstance(self.ffn, FFNConfig):
            raise TypeError(f"{name}: ffn must be an FFNConfig, got {type(self.ffn).__name__}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ffn"}
        return {"kind": self.kind, **d, "ffn": self.ffn.to_dict()}


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused QKV projection, PyTorch's SDPA kernel)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))`` then ``x + ffn(ln(x))``; the FFN is any
    liteffn layer built from an ``FFNConfig``."""

    def __init__(self, cfg: ModelConfig, causal: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, causal)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.ffn = cfg.ffn.build(cfg.n_embd)
        self.ffn_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.ffn_drop(self.ffn(self.ln_2(x)))


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 style init for the model's own Linear/Embedding layers: N(0, 0.02), residual
    projections scaled by 1/sqrt(2·n_layer). FFN layers keep their own initialisation."""
    ffn_params = {id(p) for ffn in ffn_layers(model) for p in ffn.parameters()}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in ffn_params:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("attn.proj") else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def ffn_layers(model: nn.Module) -> list[nn.Module]:
    """The FFN layer of every block, in order."""
    return [b.ffn for b in model.modules() if isinstance(b, Block)]
