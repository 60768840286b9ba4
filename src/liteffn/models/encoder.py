"""A RoBERTa-style masked-LM encoder (pre-LN, learned positions, tied output embedding): the
LookupFFN paper's pretraining setting, in miniature."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from liteffn.models.common import Block, ModelConfig, init_weights

__all__ = ["EncoderConfig", "MLMEncoder"]


@dataclass(frozen=True)
class EncoderConfig(ModelConfig):
    """Masked-LM encoder: ``vocab_size`` tokens, sequences of up to ``block_size``."""

    kind = "mlm"
    vocab_size: int = 2048
    block_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 1 or self.block_size < 1:
            raise ValueError(
                f"EncoderConfig: vocab_size and block_size must be >= 1, "
                f"got {self.vocab_size}, {self.block_size}"
            )


class MLMEncoder(nn.Module):
    """Bidirectional encoder with a masked-LM head (dense, GELU, LayerNorm, tied decoder).

    ``forward(idx, labels=None)``: idx (B, T) int64 -> logits (B, T, vocab); with labels (B, T)
    (-100 where not masked) also the mean cross-entropy over masked positions.

    Example:
        >>> model = MLMEncoder(EncoderConfig(vocab_size=100, n_layer=2, n_embd=64))
        >>> logits, _ = model(torch.randint(0, 100, (2, 16)))
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal=False) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head_dense = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.head_ln = nn.LayerNorm(cfg.n_embd)
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        init_weights(self, cfg.n_layer)

    def forward(
        self, idx: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n_ctx = idx.shape[1]  # idx: (B, T)
        if n_ctx > self.cfg.block_size:
            raise ValueError(
                f"MLMEncoder: sequence length {n_ctx} > block_size {self.cfg.block_size}"
            )
        pos = torch.arange(n_ctx, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        h = self.head_ln(F.gelu(self.head_dense(self.ln_f(x))))  # (B, T, C)
        logits = F.linear(h, self.tok_emb.weight, self.head_bias)  # (B, T, vocab), tied
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return logits, loss
