import json

import pytest
import torch

from liteffn.config import CONFIG_TYPES, DenseConfig, LookupConfig
from liteffn.layers import DenseFFN
from liteffn.models import (
    CausalLM,
    DecoderConfig,
    EncoderConfig,
    MLMEncoder,
    ViTClassifier,
    ViTConfig,
    build_model,
    ffn_layers,
    model_config_from_dict,
)

SMALL = dict(n_layer=2, n_head=2, n_embd=32)


def _available_ffn_configs():
    """Every FFN family whose layer module is importable on this branch."""
    out = []
    for kind, cls in CONFIG_TYPES.items():
        try:
            cls().build(32)
        except ImportError:
            continue
        out.append(pytest.param(cls, id=kind))
    return out


def test_decoder_is_causal():
    model = CausalLM(DecoderConfig(vocab_size=50, block_size=16, **SMALL)).eval()
    idx = torch.randint(0, 50, (2, 12))
    logits, _ = model(idx)
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    logits2, _ = model(changed)
    assert torch.equal(logits[:, :7], logits2[:, :7])  # future tokens never leak back
    assert not torch.allclose(logits[:, 7:], logits2[:, 7:])


def test_encoder_is_bidirectional_and_loss_ignores_unmasked():
    model = MLMEncoder(EncoderConfig(vocab_size=40, block_size=16, **SMALL)).eval()
    idx = torch.randint(3, 40, (2, 10))
    logits, _ = model(idx)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 40
    assert not torch.allclose(model(changed)[0][:, 0], logits[:, 0])  # sees the future
    labels = torch.full_like(idx, -100)
    labels[:, 3] = idx[:, 3]
    _, loss = model(idx, labels)
    expected = torch.nn.functional.cross_entropy(logits[:, 3], idx[:, 3])
    torch.testing.assert_close(loss, expected)


def test_vit_patchify_order_and_shapes():
    cfg = ViTConfig(image_size=8, patch_size=4, channels=1, num_classes=3, **SMALL)
    model = ViTClassifier(cfg)
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    patches = model.patchify(img)  # (1, 4, 16)
    assert patches.shape == (1, 4, 16)
    assert patches[0, 1].tolist() == img[0, 0, :4, 4:].flatten().tolist()  # top-right patch
    logits, loss = model(torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert logits.shape == (5, 3) and loss.ndim == 0
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 8, 8\), got \(5, 8, 8\)"):
        model(torch.randn(5, 8, 8))


@pytest.mark.parametrize("ffn_cls", _available_ffn_configs())
@pytest.mark.parametrize("cfg_cls", [EncoderConfig, DecoderConfig, ViTConfig])
def test_every_model_trains_with_every_available_ffn(cfg_cls, ffn_cls):
    ffn = ffn_cls()
    if isinstance(ffn, LookupConfig):
        ffn = LookupConfig(num_tables=8, block_size=16)
    cfg = cfg_cls(ffn=ffn, **SMALL)
    model = build_model(cfg)
    assert all(type(f).__name__ == ffn.layer.split(":")[1] for f in ffn_layers(model))
    if isinstance(cfg, ViTConfig):
        x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    else:
        x = torch.randint(3, cfg.vocab_size, (4, 16))
        y = x.clone()
    _, loss = model(x, y)
    loss.backward()
    grads = [p.grad for f in ffn_layers(model) for p in f.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        logits, _ = model(x)
    assert torch.isfinite(logits).all()


def test_config_round_trips_through_json():
    cfg = DecoderConfig(vocab_size=65, ffn=LookupConfig(num_tables=16), **SMALL)
    back = model_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert isinstance(back.ffn, LookupConfig)
    assert model_config_from_dict(ViTConfig().to_dict()) == ViTConfig()


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        DecoderConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=28, patch_size=5)
    with pytest.raises(ValueError, match="unknown model kind 'gpt'"):
        model_config_from_dict({"kind": "gpt"})
    with pytest.raises(TypeError, match="ffn must be an FFNConfig"):
        DecoderConfig(ffn="dense")
    with pytest.raises(ValueError, match="sequence length 20 > block_size 16"):
        CausalLM(DecoderConfig(block_size=16, **SMALL))(torch.zeros(1, 20, dtype=torch.long))


def test_ffn_is_pluggable_and_keeps_its_own_init():
    cfg = DecoderConfig(vocab_size=30, ffn=DenseConfig(d_ff=48), **SMALL)
    torch.manual_seed(0)
    model = CausalLM(cfg)
    ffns = ffn_layers(model)
    assert len(ffns) == 2 and all(isinstance(f, DenseFFN) and f.d_ff == 48 for f in ffns)
    torch.manual_seed(0)
    model2 = CausalLM(cfg)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded construction is reproducible


def test_generate_extends_the_prompt():
    model = CausalLM(DecoderConfig(vocab_size=20, block_size=8, **SMALL)).eval()
    out = model.generate(torch.zeros(2, 3, dtype=torch.long), 10, temperature=0)
    assert out.shape == (2, 13)
    out2 = model.generate(torch.zeros(2, 3, dtype=torch.long), 10, temperature=0)
    assert torch.equal(out, out2)
