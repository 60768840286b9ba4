"""Every lite layer family converts, distils, saves and reloads on every architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from _tiny import TINY, main_output, tiny_inputs

from liteffn.config import FFFConfig, LookupConfig, LUTConfig
from liteffn.convert import (
    FFNSpec,
    convert_,
    distill_,
    ffn_flops,
    from_pretrained,
    lite_layers,
    save_pretrained,
)
from liteffn.convert.budget import config_for_budget

CONFIGS = {
    "fff": FFFConfig(depth=2, trees=4),
    "lookup": LookupConfig(num_tables=8, table_bits=4),
    "lut": LUTConfig(hidden_luts=64, luts_per_output=4),
}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_family_converts_distils_and_round_trips(family, arch, tmp_path):
    torch.manual_seed(0)
    teacher = TINY[arch]().eval()
    model = convert_(copy.deepcopy(teacher), CONFIGS[family])
    layers = lite_layers(model)
    assert len(layers) == 2
    assert all(type(m).__name__ == CONFIGS[family].layer.split(":")[1] for m in layers.values())
    _, now = ffn_flops(model)
    assert now == sum(m.cost().flops_per_token for m in layers.values())
    calib = tiny_inputs(arch, batch=8, seq=10)
    calib = next(iter(calib.values()))
    rep = distill_(model, teacher, calib, layer_steps=20, e2e_steps=2, progress=False)
    for r in rep["layers"].values():  # starts at the target's scale; fitting does not diverge
        assert r["rel_mse_after"] < 3.0
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    inputs = tiny_inputs(arch)
    with torch.no_grad():
        torch.testing.assert_close(
            main_output(loaded, inputs), main_output(model.eval(), inputs), rtol=0, atol=0
        )


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_budget_configs_fit_their_budget(family):
    spec = FFNSpec(384, 1536)
    for cut in (4, 8):
        cfg = config_for_budget(family, spec, cut)
        flops = cfg.build(384).cost().flops_per_token
        assert flops <= spec.flops_per_token / cut
