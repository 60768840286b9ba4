"""The three training tasks: their data, default model sizes, batch sampling and evaluation.

A task samples *global* batches from a ``torch.Generator`` (the same on every DDP rank) and each
rank takes its slice, so a run with ``k`` processes sees exactly the batches of a 1-process run.

* ``lm``: causal next-token prediction on Shakespeare (character level by default).
* ``mlm``: RoBERTa-style masked LM on Shakespeare (BPE by default): 15% of positions are
  predicted, of those 80% replaced by ``<mask>``, 10% by a random token, 10% left unchanged.
* ``vit``: Fashion-MNIST classification (60k training images; the 10k test images validate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from liteffn.config import FFNConfig
from liteffn.models import DecoderConfig, EncoderConfig, ModelConfig, ViTConfig

__all__ = ["TASKS", "ImageTask", "TextTask", "make_task"]

TASKS = ("mlm", "lm", "vit")
PAD, UNK, MASK = 0, 1, 2  # special token ids of both tokenizers

# Default model sizes (nanoGPT shakespeare-char scale, shrunk to train in minutes on 2 cores).
_DEFAULT = dict(n_layer=4, n_head=4, n_embd=128)
_TINY = dict(n_layer=2, n_head=2, n_embd=32)


class TextTask:
    """Shakespeare as one token stream per split; ``lm`` or ``mlm`` windows of ``block_size``."""

    def __init__(
        self,
        kind: str,
        *,
        tokenizer: str = "",
        bpe_vocab: int = 2048,
        block_size: int = 128,
        mask_prob: float = 0.15,
        tiny: bool = False,
    ) -> None:
        from liteffn.data.shakespeare import CharVocab, split_text

        self.kind, self.block_size, self.mask_prob = kind, block_size, mask_prob
        self.tokenizer = tokenizer or ("bpe" if kind == "mlm" else "char")
        full_train, val_text = split_text()
        train_text = full_train
        if tiny:  # a slice of each split: the tests need seconds, not the corpus
            train_text, val_text = full_train[:60_000], val_text[:12_000]
        if self.tokenizer == "char":
            vocab = CharVocab.from_text(full_train)  # the training split's characters
            self.vocab_size = vocab.vocab_size
            encode = vocab.encode
        elif self.tokenizer == "bpe":
            from liteffn.data.tokenizer import shakespeare_bpe

            tok = shakespeare_bpe(bpe_vocab)
            self.vocab_size = tok.get_vocab_size()

            def encode(text: str) -> list[int]:
                # encode per chunk of lines: one huge string is slow in `tokenizers`
                chunks = text.splitlines(keepends=True)
                return [i for enc in tok.encode_batch(chunks) for i in enc.ids]
        else:
            raise ValueError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        self.train = torch.tensor(encode(train_text), dtype=torch.int64)
        self.val = torch.tensor(encode(val_text), dtype=torch.int64)
        for name, data in (("training", self.train), ("validation", self.val)):
            if len(data) <= block_size + 1:
                raise ValueError(f"the {name} split ({len(data)} tokens) is shorter than a block")

    def model_config(self, ffn: FFNConfig, tiny: bool, **overrides) -> ModelConfig:
        cls = EncoderConfig if self.kind == "mlm" else DecoderConfig
        size = {**(_TINY if tiny else _DEFAULT), **overrides}
        return cls(vocab_size=self.vocab_size, block_size=self.block_size, ffn=ffn, **size)

    def _windows(self, data: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.block_size + 1)
        return data[starts[:, None] + offsets]  # (B, T+1)

    def _mask(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """RoBERTa masking of x (B, T): (inputs, labels with -100 where not predicted)."""
        u = torch.rand(x.shape, generator=gen)
        r = torch.rand(x.shape, generator=gen)
        rand_tok = torch.randint(3, self.vocab_size, x.shape, generator=gen)
        chosen = u < self.mask_prob
        labels = torch.where(chosen, x, torch.full_like(x, -100))
        inputs = torch.where(chosen & (r < 0.8), torch.full_like(x, MASK), x)
        inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_tok, inputs)
        return inputs, labels

    def _batch_from(self, data, starts, gen) -> tuple[torch.Tensor, torch.Tensor]:
        w = self._windows(data, starts)  # (B, T+1)
        if self.kind == "lm":
            return w[:, :-1], w[:, 1:]
        return self._mask(w[:, :-1], gen)

    def train_batch(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.train) - self.block_size - 1, (batch,), generator=gen)
        return self._batch_from(self.train, starts, gen)

    def eval_batches(self, count: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed validation set: ``count·batch`` windows spread evenly over the split, with a
        fixed mask for ``mlm`` (the same on every call, every rank and every run)."""
        n = count * batch
        starts = torch.linspace(0, len(self.val) - self.block_size - 2, n).long()
        gen = torch.Generator().manual_seed(1234)
        x, y = self._batch_from(self.val, starts, gen)
        return list(zip(x.split(batch), y.split(batch), strict=True))

    @staticmethod
    def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(summed cross-entropy, predicted tokens, correct predictions) of logits (B, T, V)."""
        flat_y = y.reshape(-1)
        loss = F.cross_entropy(logits.flatten(0, 1), flat_y, ignore_index=-100, reduction="sum")
        keep = flat_y != -100
        correct = int((logits.flatten(0, 1).argmax(-1)[keep] == flat_y[keep]).sum())
        return loss, int(keep.sum()), correct


class ImageTask:
    """Fashion-MNIST images normalised to zero mean, unit variance (training-set statistics)."""

    kind = "vit"
    MEAN, STD = 0.2860, 0.3530  # of the 60k training images, /255

    def __init__(self, *, tiny: bool = False) -> None:
        from liteffn.data.fashion_mnist import load_fashion_mnist

        x, y = load_fashion_mnist("train")
        xt, yt = load_fashion_mnist("test")
        if tiny:
            x, y, xt, yt = x[:2000], y[:2000], xt[:512], yt[:512]
        self.train = ((x.float() / 255 - self.MEAN) / self.STD).unsqueeze(1)  # (N, 1, 28, 28)
        self.train_y = y
        self.val = ((xt.float() / 255 - self.MEAN) / self.STD).unsqueeze(1)
        self.val_y = yt

    def model_config(self, ffn: FFNConfig, tiny: bool, **overrides) -> ModelConfig:
        size = {**(_TINY if tiny else _DEFAULT), **overrides}
        if tiny:
            size.setdefault("patch_size", 7)
        return ViTConfig(ffn=ffn, **size)

    def train_batch(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.train), (batch,), generator=gen)
        return self.train[idx], self.train_y[idx]

    def eval_batches(self, count: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = min(count * batch, len(self.val))
        return list(zip(self.val[:n].split(batch), self.val_y[:n].split(batch), strict=True))

    @staticmethod
    def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        loss = F.cross_entropy(logits, y, reduction="sum")
        return loss, int(y.numel()), int((logits.argmax(-1) == y).sum())


def make_task(kind: str, *, tiny: bool = False, **kwargs) -> TextTask | ImageTask:
    """The task ``kind`` ("mlm", "lm" or "vit") with its data loaded."""
    if kind in ("mlm", "lm"):
        return TextTask(kind, tiny=tiny, **kwargs)
    if kind == "vit":
        return ImageTask(tiny=tiny)
    raise ValueError(f"task must be one of {list(TASKS)}, got {kind!r}")
