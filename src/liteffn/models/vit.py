"""A ViT classifier (pre-LN, [CLS] token, learned positions): the QuWeiT setting, in miniature."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from liteffn.models.common import Block, ModelConfig, init_weights

__all__ = ["ViTClassifier", "ViTConfig"]


@dataclass(frozen=True)
class ViTConfig(ModelConfig):
    """Images of ``channels x image_size x image_size`` cut into ``patch_size`` squares."""

    kind = "vit"
    image_size: int = 28
    patch_size: int = 4
    channels: int = 1
    num_classes: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: image_size ({self.image_size}) must be a multiple of "
                f"patch_size ({self.patch_size})"
            )
        if self.channels < 1 or self.num_classes < 2:
            raise ValueError(
                f"ViTConfig: channels must be >= 1 and num_classes >= 2, "
                f"got {self.channels}, {self.num_classes}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class ViTClassifier(nn.Module):
    """``forward(images, labels=None)``: images (B, channels, H, W) float -> logits (B, classes),
    and with labels (B,) the mean cross-entropy.

    Example:
        >>> model = ViTClassifier(ViTConfig(n_layer=2, n_embd=64))
        >>> logits, _ = model(torch.randn(3, 1, 28, 28))
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.patch_size
        self.patch = nn.Linear(cfg.channels * p * p, cfg.n_embd)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.n_embd))
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.n_embd))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal=False) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.num_classes)
        init_weights(self, cfg.n_layer)
        nn.init.normal_(self.pos_emb, std=0.02)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, c, H, W) -> (B, num_patches, c·p·p), patches in row-major order."""
        cfg, p = self.cfg, self.cfg.patch_size
        B = images.shape[0]
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"ViTClassifier: expected images (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        n = cfg.image_size // p
        x = images.reshape(B, cfg.channels, n, p, n, p)  # (B, c, nh, p, nw, p)
        x = x.permute(0, 2, 4, 1, 3, 5)  # (B, nh, nw, c, p, p)
        return x.reshape(B, n * n, cfg.channels * p * p)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.patch(self.patchify(images))  # (B, N, C)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_emb
        x = self.drop(x)  # (B, N+1, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x[:, 0]))  # (B, classes), from [CLS]
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits, loss
