import pytest

from liteffn.data import shakespeare
from liteffn.data.shakespeare import (
    VALIDATION_WORKS,
    CharVocab,
    load_works,
    split_text,
    split_works,
)


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_two_editions_become_one_work_modern_preferred(tmp_path):
    _write(
        tmp_path,
        {
            "hamlet_gut.txt": "modern hamlet",
            "hamlet_gut_f.txt": "folio hamlet",
            "twelfe-night_gut_f.txt": "folio twelfth",
            "twelfth_night_gut.txt": "modern twelfth",
            "pericles_gut.txt": "only modern",
            "john_gut_f.txt": "only folio",
            "metadata.txt": "[x]\ntitle = not a work",
        },
    )
    works = load_works(tmp_path)
    assert works == {
        "hamlet": "modern hamlet\n",
        "john": "only folio\n",
        "pericles": "only modern\n",
        "twelfth_night": "modern twelfth\n",
    }


def test_missing_validation_work_is_a_clear_error(tmp_path):
    _write(tmp_path, {"pericles_gut.txt": "x"})
    with pytest.raises(ValueError, match="validation works"):
        split_works(load_works(tmp_path))


def test_real_archive_split_by_work():
    works = load_works()
    assert 40 <= len(works) <= 45  # 43 distinct works, each once
    assert not any(k.endswith("_f") or "gut" in k for k in works)
    train, val = split_works(works)
    assert set(val) == set(VALIDATION_WORKS)
    assert not set(train) & set(val)
    train_text, val_text = split_text(works)
    assert 0.05 < len(val_text) / (len(train_text) + len(val_text)) < 0.2
    line = "Get thee to bed, Francisco"  # Hamlet, I.i
    assert line in val_text and line not in train_text
    assert shakespeare.texts_dir().name == "texts"


def test_char_vocab_round_trip_and_unknowns():
    vocab = CharVocab.from_text("abca ")
    assert vocab.vocab_size == 3 + 4
    ids = vocab.encode("a cab")
    assert vocab.decode(ids) == "a cab"
    assert vocab.encode("z") == [vocab.token_id("<unk>")]
    assert min(ids) >= 3  # specials come first
    assert vocab.token_id("<mask>") == 2
