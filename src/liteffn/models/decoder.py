"""A GPT-style causal decoder (nanoGPT-sized): pre-LN blocks, learned positions, tied head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from liteffn.models.common import Block, ModelConfig, init_weights

__all__ = ["CausalLM", "DecoderConfig"]


@dataclass(frozen=True)
class DecoderConfig(ModelConfig):
    """Causal LM over ``vocab_size`` tokens with a context of ``block_size``."""

    kind = "lm"
    vocab_size: int = 128
    block_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 1 or self.block_size < 1:
            raise ValueError(
                f"DecoderConfig: vocab_size and block_size must be >= 1, "
                f"got {self.vocab_size}, {self.block_size}"
            )


class CausalLM(nn.Module):
    """GPT decoder. ``forward(idx, targets=None)``: idx (B, T) -> logits (B, T, vocab), and with
    targets (B, T) the mean next-token cross-entropy.

    Example:
        >>> model = CausalLM(DecoderConfig(vocab_size=65, n_layer=2, n_embd=64))
        >>> model.generate(torch.zeros(1, 1, dtype=torch.long), 10).shape
        torch.Size([1, 11])
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal=True) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        init_weights(self, cfg.n_layer)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n_ctx = idx.shape[1]  # idx: (B, T)
        if n_ctx > self.cfg.block_size:
            raise ValueError(
                f"CausalLM: sequence length {n_ctx} > block_size {self.cfg.block_size}"
            )
        pos = torch.arange(n_ctx, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.tok_emb.weight)  # (B, T, vocab), tied
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` after ``idx`` (B, T); greedy when ``temperature == 0``."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.cfg.block_size :])
            logits = logits[:, -1, :]  # (B, vocab)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
