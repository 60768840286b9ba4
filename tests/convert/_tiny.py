"""Tiny randomly initialised Hugging Face models, one per supported architecture (no downloads)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

D = 32  # hidden size of every tiny model


def tiny_bert():
    cfg = transformers.BertConfig(
        vocab_size=99, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.BertModel(cfg)


def tiny_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=99, hidden_size=D, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=99, n_embd=D, n_layer=2, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(cfg)


def tiny_vit():
    cfg = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=D, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64,
    )  # fmt: skip
    return transformers.ViTModel(cfg)


TINY = {"bert": tiny_bert, "llama": tiny_llama, "gpt2": tiny_gpt2, "vit": tiny_vit}


def tiny_inputs(arch: str, batch: int = 2, seq: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if arch == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    return {"input_ids": torch.randint(0, 99, (batch, seq), generator=g)}


def main_output(model, inputs) -> torch.Tensor:
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state
