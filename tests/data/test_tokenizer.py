import pytest

tokenizers = pytest.importorskip("tokenizers")

from liteffn.data.tokenizer import SPECIALS, shakespeare_bpe, train_bpe  # noqa: E402


def test_bpe_round_trips_and_has_specials_first():
    tok = train_bpe(["to be or not to be, that is the question"] * 20, vocab_size=300)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2]
    text = "to be, or not"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert len(ids) < len(text)  # merges learned


def test_bpe_vocab_too_small_is_rejected():
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        train_bpe(["x"], vocab_size=100)


def test_shakespeare_bpe_is_cached(tmp_path):
    tok = shakespeare_bpe(512, cache=tmp_path)
    path = tmp_path / "shakespeare-bpe-512.json"
    assert path.is_file()
    assert not list(tmp_path.glob(".partial-*"))
    again = shakespeare_bpe(512, cache=tmp_path)
    text = "Now is the winter of our discontent"
    assert tok.encode(text).ids == again.encode(text).ids
    assert tok.get_vocab_size() == 512
