"""A byte-level BPE tokenizer for the Shakespeare training split, trained with the Hugging Face
``tokenizers`` package and cached as JSON (trained once per vocabulary size).

Only the training split is seen, so validation perplexity is not flattered by merges learned on
the validation works.

Example:
    >>> tok = shakespeare_bpe(vocab_size=2048)
    >>> tok.encode("To be, or not to be").ids
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from liteffn.data._fetch import cache_dir

__all__ = ["SPECIALS", "shakespeare_bpe", "train_bpe"]

SPECIALS = ["<pad>", "<unk>", "<mask>"]  # ids 0, 1, 2 (same as CharVocab)


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "the BPE tokenizer needs the `tokenizers` package: pip install 'tokenizers>=0.19'"
        ) from exc
    return tokenizers


def train_bpe(texts: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``texts`` (deterministic for the same input)."""
    tk = _require_tokenizers()
    if vocab_size < len(SPECIALS) + 256:
        raise ValueError(f"vocab_size must be >= {len(SPECIALS) + 256} (bytes), got {vocab_size}")
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def shakespeare_bpe(vocab_size: int = 2048, *, cache: Path | None = None):
    """The BPE tokenizer of the Shakespeare training split, from the cache or trained now."""
    tk = _require_tokenizers()
    folder = Path(cache) if cache is not None else cache_dir() / "tokenizers"
    path = folder / f"shakespeare-bpe-{vocab_size}.json"
    if path.is_file():
        return tk.Tokenizer.from_file(str(path))
    from liteffn.data.shakespeare import split_works

    train, _ = split_works()
    tok = train_bpe(list(train.values()), vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".json")
    os.close(fd)
    try:
        tok.save(tmp)
        os.replace(tmp, path)  # atomic: a reader sees the old state or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tok
