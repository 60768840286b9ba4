import pytest
import torch

from liteffn.testing import assert_exact, assert_kernel_close, sqnr_db


def test_kernel_close_accepts_tiny_and_rejects_real_differences():
    e = torch.randn(100)
    assert_kernel_close(e * (1 + 1e-7), e)
    bad = e.clone()
    bad[7] += 1e-2
    with pytest.raises(AssertionError, match="1 of 100 elements differ"):
        assert_kernel_close(bad, e)


def test_exact_treats_nan_as_equal_and_catches_one_ulp():
    e = torch.tensor([1.0, float("nan")])
    assert_exact(e.clone(), e)
    with pytest.raises(AssertionError):
        assert_exact(torch.nextafter(e, torch.tensor(2.0)), e)


def test_sqnr():
    x = torch.randn(1000, dtype=torch.float64)
    assert sqnr_db(x, x) == float("inf")
    assert 19 < sqnr_db(x + 0.1 * torch.randn(1000, dtype=torch.float64), x) < 21
