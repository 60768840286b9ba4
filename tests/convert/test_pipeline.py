"""The `liteffn convert` pipeline end to end on a tiny local BERT with a tiny tokenizer; the text
corpora are replaced by synthetic sentences so nothing is downloaded."""

from __future__ import annotations

import json

import pytest
import torch

from liteffn.cli import main
from liteffn.convert import budget

transformers = pytest.importorskip("transformers")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "big",
    "small",
    "red",
    "blue",
    "market",
    "shares",
    "fell",
    "rose",
    "film",
    "star",
]


@pytest.fixture(params=["bert", "llama"])
def tiny_model_dir(request, tmp_path, monkeypatch):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    kw = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    torch.manual_seed(0)
    model_dir = tmp_path / f"tiny-{request.param}"
    if request.param == "bert":
        transformers.BertModel(transformers.BertConfig(**kw)).save_pretrained(model_dir)
    else:
        cfg = transformers.LlamaConfig(**kw, num_key_value_heads=2)
        transformers.LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    g = torch.Generator().manual_seed(0)

    def sentences(n):
        return [
            " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (12,), generator=g))
            for _ in range(n)
        ]

    texts = {"train": sentences(40), "test": sentences(40)}
    from liteffn.data import news

    class Split:
        def __init__(self, split):
            self.texts = tuple(texts[split])
            self.labels = tuple(i % 5 for i in range(len(self.texts)))

    monkeypatch.setattr(news, "news_paragraphs", lambda split="train": list(texts[split]))
    monkeypatch.setattr(news, "load_bbc_news", lambda split="train": Split(split))
    return model_dir


def test_convert_cli_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    code = main([
        "convert", "--model", str(tiny_model_dir), "--method", "dense", "--budget", "4x",
        "--effort", "quick", "--calib", "16", "--layer-steps", "5", "--e2e-steps", "2",
        "--eval-texts", "8", "--probe-train", "20", "--out", str(out), "--quiet",
        "--threads", "1",
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "FFN GFLOPs/token" in text and "FFN FLOPs cut 4.0x (target >= 4x): met" in text
    report = json.loads((out / "report.json").read_text())
    assert report["reload_max_abs_diff"] == 0.0
    assert set(report["speed"]) == {"original", "converted"}
    if report["kind"] == "encoder":
        assert report["config"] == {"kind": "dense", "d_ff": 16, "activation": "gelu"}
        assert "mean embedding cosine" in text
        assert 0 <= report["fidelity"]["embedding_cosine"] <= 1.0001
        assert report["speed"]["converted"]["encode_32x128_s"] > 0
    else:  # SwiGLU: 6·d·d_ff dense FLOPs, so a quarter is 4·d·24
        assert report["config"] == {"kind": "dense", "d_ff": 24, "activation": "gelu"}
        ppl = report["fidelity"]["perplexity"]
        assert 1 < ppl["original"] < 1e4 and 1 < ppl["converted"] < 1e4
        assert "held-out perplexity" in text and "decode tokens/s" in text
        assert report["speed"]["converted"]["decode_tok_s"] > 0
    assert (out / "tokenizer.json").is_file() and (out / "liteffn.json").is_file()
    assert not (tmp_path / "converted.distill.pt").exists()  # the resume file is removed


def test_budget_parsing_and_search():
    assert budget.parse_budget("4x") == 4.0
    assert budget.parse_budget("0.25") == 4.0
    with pytest.raises(ValueError, match=r"must look like '4x' or '0\.25', got 'fast'"):
        budget.parse_budget("fast")
    with pytest.raises(ValueError, match="must cut FLOPs"):
        budget.parse_budget("0.5x")
    from liteffn.convert import FFNSpec

    s = FFNSpec(32, 64)
    cfg = budget.config_for_budget("dense", s, 4)
    assert cfg.d_ff == 16 and cfg.build(32).cost().flops_per_token <= s.flops_per_token / 4
    with pytest.raises(ValueError, match="no dense config"):
        budget.config_for_budget("dense", s, 4, d_ff=64)
    with pytest.raises(ValueError, match="unknown method 'moe'"):
        budget.config_for_budget("moe", s, 4)
