import pytest

from liteffn import DenseFFN
from liteffn.config import (
    DenseConfig,
    FFFConfig,
    LookupConfig,
    LUTConfig,
    config_from_dict,
)


@pytest.mark.parametrize(
    "cfg", [DenseConfig(), FFFConfig(depth=3), LookupConfig(), LUTConfig(hidden_luts=[8, 4])]
)
def test_round_trip(cfg):
    assert config_from_dict(cfg.to_dict()) == cfg


def test_dense_build_defaults_to_4d():
    layer = DenseConfig().build(16)
    assert isinstance(layer, DenseFFN) and layer.d_ff == 64


def test_adapts_to_width():
    assert LookupConfig(block_size=64).layer_kwargs(24)["block_size"] == 32
    assert LUTConfig().layer_kwargs(10)["hidden_luts"] == 160


@pytest.mark.parametrize(
    ("make", "msg"),
    [
        (lambda: FFFConfig(depth=-1), "depth"),
        (lambda: LookupConfig(table_bits=13), "table_bits"),
        (lambda: LookupConfig(projection="fft"), "projection"),
        (lambda: LookupConfig(block_size=48), "power of two"),
        (lambda: LUTConfig(lut_inputs=7), "lut_inputs"),
        (lambda: LUTConfig(hidden_luts=(4, 0)), "hidden_luts"),
        (lambda: DenseConfig(d_ff=0), "d_ff"),
        (lambda: config_from_dict({"kind": "moe"}), "unknown FFN config kind"),
        (lambda: config_from_dict({"kind": "fff", "depht": 3}), "unknown fields"),
        (lambda: DenseConfig().build(0), "d_model"),
    ],
)
def test_validation_errors(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()
