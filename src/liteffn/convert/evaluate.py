"""Fidelity and end-to-end speed of a converted model against its original.

Fidelity: sentence-embedding cosine and a linear probe for encoders, perplexity for causal LMs.
Speed: an encoder encodes a batch of 32 x 128 tokens; a causal LM prefills 256 tokens and
decodes greedily with its KV cache. Models are timed interleaved in the same run, same threads.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from liteffn.data.pretrained import mean_pool

__all__ = [
    "embedding_cosine",
    "encode",
    "linear_probe",
    "perplexity",
    "time_decode",
    "time_encode",
]


@torch.inference_mode()
def encode(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length=128
) -> torch.Tensor:
    """Sentence embeddings (N, d): mean-pooled, L2-normalised final hidden states."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**enc).last_hidden_state  # (B, T, d)
        out.append(mean_pool(hidden, enc["attention_mask"]))
    return torch.cat(out)


def embedding_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows of two embedding matrices (N, d)."""
    return float(F.cosine_similarity(a, b, dim=-1).mean())


def linear_probe(
    x_train: torch.Tensor,
    y_train: Sequence[int],
    x_test: torch.Tensor,
    y_test: Sequence[int],
    weight_decay: float = 1e-3,
    steps: int = 200,
) -> float:
    """Test accuracy of a multinomial logistic regression fitted (L-BFGS, fixed steps) on frozen
    embeddings."""
    ytr, yte = torch.as_tensor(list(y_train)), torch.as_tensor(list(y_test))
    n_cls = int(max(ytr.max(), yte.max())) + 1
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mu) / sd, (x_test - mu) / sd
    lin = nn.Linear(xtr.shape[1], n_cls)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), ytr) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xte).argmax(-1) == yte).float().mean())


@torch.inference_mode()
def perplexity(
    model: nn.Module, tokenizer: Any, text: str, window: int = 256, max_tokens: int = 8192
) -> float:
    """Perplexity of a causal LM on ``text``, in non-overlapping windows of ``window`` tokens
    (at most ``max_tokens`` tokens in all)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0][:max_tokens]  # (N,)
    nll, count = 0.0, 0
    for i in range(0, len(ids) - 1, window):
        chunk = ids[i : i + window].unsqueeze(0)  # (1, T)
        if chunk.shape[1] < 2:
            break
        logits = model(input_ids=chunk).logits[0, :-1].float()  # (T-1, V)
        nll += float(F.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
        count += chunk.shape[1] - 1
    if count == 0:
        raise ValueError("perplexity: the text has fewer than 2 tokens")
    return float(torch.exp(torch.tensor(nll / count)))


def _median_times(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():  # interleaved: contention hits every model alike
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


@torch.inference_mode()
def time_encode(
    models: dict[str, nn.Module],
    tokenizer: Any,
    texts: Sequence[str],
    batch: int = 32,
    seq: int = 128,
    repeats: int = 5,
) -> dict[str, float]:
    """Median seconds for each model to encode ``batch`` texts, each padded or truncated to
    ``seq`` tokens."""
    enc = tokenizer(
        list(texts[:batch]),
        padding="max_length",
        truncation=True,
        max_length=seq,
        return_tensors="pt",
    )
    return _median_times({k: (lambda m=m: m(**enc)) for k, m in models.items()}, repeats)


@torch.inference_mode()
def time_decode(
    models: dict[str, nn.Module],
    tokenizer: Any,
    text: str,
    prefill: int = 256,
    decode: int = 32,
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """Per model: median seconds to prefill ``prefill`` tokens and decode tokens/s over
    ``decode`` greedy steps with the KV cache."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :prefill]  # (1, T)
    if ids.shape[1] < prefill:
        raise ValueError(f"time_decode: need {prefill} tokens of text, got {ids.shape[1]}")
    out: dict[str, dict[str, list[float]]] = {k: {"prefill": [], "decode": []} for k in models}

    def run(m, rec):
        # the KV cache's name: `cache` in recent transformers (`past_key_values` deprecated)
        name = "cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values"
        t = time.perf_counter()
        o = m(input_ids=ids, use_cache=True)
        t1 = time.perf_counter()
        past, nxt = getattr(o, name), o.logits[:, -1:].argmax(-1)  # (1, 1)
        for _ in range(decode):
            o = m(input_ids=nxt, use_cache=True, **{name: past})
            past, nxt = getattr(o, name), o.logits[:, -1:].argmax(-1)
        t2 = time.perf_counter()
        if rec is not None:
            rec["prefill"].append(t1 - t)
            rec["decode"].append(t2 - t1)

    for m in models.values():
        run(m, None)  # warm-up
    for _ in range(repeats):
        for k, m in models.items():
            run(m, out[k])
    return {
        k: {
            "prefill_s": statistics.median(v["prefill"]),
            "decode_tok_s": decode / statistics.median(v["decode"]),
        }
        for k, v in out.items()
    }
