"""What every layer family promises alike: bad input gets an error naming expected and got,
in training and inference mode and from ``reference()``."""

import pytest
import torch

from liteffn import LUTFFN, DenseFFN, FastFeedForward, LookupFFN

LAYERS = {
    "dense": lambda: DenseFFN(8, 16),
    "fff": lambda: FastFeedForward(8, depth=2),
    "lookup": lambda: LookupFFN(8, 4, 3, block_size=8),
    "lut": lambda: LUTFFN(8, bits_per_channel=2, hidden_luts=8, luts_per_output=2, lut_inputs=2),
}

BAD_INPUTS = [
    (torch.randn(3, 7), ValueError, "d_model=8, got shape"),
    (torch.randn(()), ValueError, "0-d"),
    (torch.ones(3, 8, dtype=torch.int64), TypeError, "floating-point"),
    (torch.randn(3, 8, device="meta"), ValueError, "CPU"),
    ([1.0] * 8, TypeError, "torch.Tensor"),
]


@pytest.mark.parametrize("family", sorted(LAYERS))
@pytest.mark.parametrize(("bad", "err", "msg"), BAD_INPUTS)
def test_bad_input_names_expected_and_got(family, bad, err, msg):
    layer = LAYERS[family]()
    for training in (True, False):
        layer.train(training)
        with pytest.raises(err, match=msg):
            layer(bad)
    with pytest.raises(err, match=msg):
        layer.reference(bad)
