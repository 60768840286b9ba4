import pytest
import torch

from liteffn import Cost, DenseFFN
from liteffn.testing import assert_kernel_close


def test_shapes_and_modes_agree():
    ffn = DenseFFN(16, 64)
    x = torch.randn(2, 3, 16)
    y_train = ffn.train()(x)
    y_eval = ffn.eval()(x)
    assert y_train.shape == x.shape
    assert_kernel_close(y_eval, y_train)
    assert_kernel_close(ffn.reference(x), y_eval)


def test_matches_plain_pytorch():
    ffn = DenseFFN(8, 32).eval()
    x = torch.randn(5, 8)
    expected = ffn.fc2(torch.nn.functional.gelu(ffn.fc1(x)))
    assert_kernel_close(ffn(x), expected)


def test_cost_counts_two_gemms():
    c = DenseFFN(768, 3072).cost()
    assert isinstance(c, Cost)
    assert c.flops_per_token == 4 * 768 * 3072
    assert c.param_bytes == 4 * (2 * 768 * 3072 + 768 + 3072)


def test_empty_batch_and_non_contiguous():
    ffn = DenseFFN(8, 16).eval()
    assert ffn(torch.randn(0, 8)).shape == (0, 8)
    x = torch.randn(8, 6).t()  # (6, 8), non-contiguous
    assert_kernel_close(ffn(x), ffn(x.contiguous()))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="activation"):
        DenseFFN(8, 16, activation="swish2")
    with pytest.raises(ValueError, match=">= 1"):
        DenseFFN(0, 16)
