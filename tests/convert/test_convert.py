"""convert_ on tiny models of every supported architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from _tiny import TINY, D, main_output, tiny_inputs
from torch import nn

from liteffn.config import DenseConfig, FFFConfig
from liteffn.convert import convert_, ffn_flops, handler_for, lite_layers, record_of
from liteffn.layers import DenseFFN, FFNLayer

EXPECTED = {  # architecture -> (d_ff, gated)
    "bert": (64, False),
    "llama": (48, True),
    "gpt2": (128, False),
    "vit": (64, False),
}


class _Exact(FFNLayer):
    """A 'lite' layer that is the teacher's dense FFN itself: the converted model must then
    compute exactly what the original does."""

    def __init__(self, dense: nn.Module, d_model: int) -> None:
        super().__init__()
        self.d_model, self.dense = d_model, dense

    def _train_forward(self, x2):
        return self.dense(x2)

    _reference = _train_forward


def test_handler_finds_every_ffn_with_its_shape(arch):
    model = TINY[arch]()
    handler = handler_for(model)
    assert handler.name == arch
    blocks = list(handler.blocks(model))
    assert len(blocks) == 2
    for _, block in blocks:
        spec = handler.spec(block)
        assert (spec.d_model, spec.d_ff, spec.gated) == (D, *EXPECTED[arch])
        assert spec.flops_per_token == (6 if spec.gated else 4) * D * spec.d_ff


@torch.no_grad()
def test_lite_layer_replaces_exactly_the_ffn(arch):
    # Installing the original FFN as the 'lite' layer must leave the model's output unchanged:
    # residuals, norms and dropouts around the FFN are kept, the FFN itself is replaced whole.
    torch.manual_seed(0)
    teacher = TINY[arch]().eval()
    model = copy.deepcopy(teacher)
    handler = handler_for(model)
    for (_, block), (_, t_block) in zip(
        handler.blocks(model), handler.blocks(teacher), strict=True
    ):
        dense = copy.deepcopy(handler.dense(t_block))
        handler.install(block, _Exact(dense, D))
        assert isinstance(handler.lite(block), _Exact)
    inputs = tiny_inputs(arch)
    torch.testing.assert_close(main_output(model, inputs), main_output(teacher, inputs))
    # and the FFN really is used: breaking it changes the output
    for _, block in handler.blocks(model):
        handler.lite(block).dense = nn.Identity() if arch != "vit" else _Zero()
    assert not torch.allclose(main_output(model, inputs), main_output(teacher, inputs))


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


@torch.no_grad()
def test_bert_dense_config_with_copied_weights_matches_original():
    teacher = TINY["bert"]().eval()
    model = copy.deepcopy(teacher)
    convert_(model, DenseConfig(d_ff=64))
    for layer, t_layer in zip(model.encoder.layer, teacher.encoder.layer, strict=True):
        lite = layer.intermediate
        assert isinstance(lite, DenseFFN)
        lite.fc1.load_state_dict(t_layer.intermediate.dense.state_dict())
        lite.fc2.load_state_dict(t_layer.output.dense.state_dict())
        assert isinstance(layer.output.dense, nn.Identity)
        assert layer.output.LayerNorm is not None  # the norm after the residual stays
    inputs = tiny_inputs("bert")
    torch.testing.assert_close(main_output(model.eval(), inputs), main_output(teacher, inputs))


def test_convert_records_sites_counts_flops_and_runs(arch):
    model = TINY[arch]()
    dense_before, _ = ffn_flops(model)
    assert convert_(model, DenseConfig(d_ff=8)) is model
    rec = record_of(model)
    assert rec["architecture"] == arch and len(rec["sites"]) == 2
    site = next(iter(rec["sites"].values()))
    assert site["config"] == {"kind": "dense", "d_ff": 8, "activation": "gelu"}
    assert (site["d_ff"], site["gated"]) == EXPECTED[arch]
    dense, now = ffn_flops(model)
    assert dense == dense_before == 2 * (6 if EXPECTED[arch][1] else 4) * D * EXPECTED[arch][0]
    assert now == 2 * 4 * D * 8
    layers = lite_layers(model)
    assert list(layers) == list(rec["sites"]) and all(
        isinstance(x, DenseFFN) for x in layers.values()
    )
    out = main_output(model.eval(), tiny_inputs(arch))
    assert torch.isfinite(out).all()
    # gradients reach the lite layers in training mode
    model.train()
    main_output(model, tiny_inputs(arch)).float().pow(2).mean().backward()
    assert all(p.grad is not None for lyr in layers.values() for p in lyr.parameters())


def test_filter_fn_and_incremental_conversion():
    model = TINY["bert"]()
    seen = []

    def first_only(block, name):
        seen.append(name)
        return name.endswith(".0")

    convert_(model, DenseConfig(d_ff=8), first_only)
    assert seen == ["encoder.layer.0", "encoder.layer.1"]
    assert list(lite_layers(model)) == ["encoder.layer.0"]
    _, mixed = ffn_flops(model)
    assert mixed == 4 * D * 8 + 4 * D * 64
    convert_(model, DenseConfig(d_ff=4))  # converts the rest, leaves layer 0 alone
    rec = record_of(model)["sites"]
    assert rec["encoder.layer.0"]["config"]["d_ff"] == 8
    assert rec["encoder.layer.1"]["config"]["d_ff"] == 4
    with pytest.raises(ValueError, match=r"no FFN was converted.*2 already converted"):
        convert_(model, DenseConfig(d_ff=4))


def test_errors_name_what_was_expected():
    with pytest.raises(TypeError, match=r"config must be an FFNConfig.*got dict"):
        convert_(TINY["bert"](), {"kind": "fff"})

    class Toy(nn.Module):
        pass

    with pytest.raises(ValueError, match=r"unsupported architecture: Toy.*bert.*llama.*gpt2.*vit"):
        convert_(Toy(), FFFConfig())
    transformers = pytest.importorskip("transformers")
    t5 = transformers.T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="model_type='t5'"):
        convert_(transformers.T5Model(t5), FFFConfig())


def test_import_liteffn_stays_light_and_exports_the_verbs():
    import subprocess
    import sys

    code = (
        "import sys, liteffn; "
        "assert 'transformers' not in sys.modules and 'liteffn.convert' not in sys.modules; "
        "from liteffn import convert_, distill_, save_pretrained, from_pretrained; "
        "import liteffn.convert as c; assert convert_ is c.convert_ and distill_ is c.distill_"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
