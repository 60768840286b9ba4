import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteffn.ops.fwht import fwht, fwht_native_, fwht_reference
from liteffn.testing import assert_exact, assert_kernel_close


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 64, 512])
def test_reference_equals_hadamard_matrix(n):
    x = torch.randn(5, n, dtype=torch.float64)
    assert_kernel_close(fwht_reference(x, 0.5), 0.5 * x @ hadamard(n))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 1024])
@pytest.mark.parametrize("rows", [0, 1, 3, 37])
def test_native_is_bit_identical_to_reference(isa, n, rows):
    # Every path performs the same additions in the same order, so results are exact.
    x = torch.randn(rows, n)
    expected = fwht_reference(x, 1 / math.sqrt(n))
    assert_exact(fwht_native_(x.clone(), 1 / math.sqrt(n)), expected, what=f"{isa} n={n}")


@settings(max_examples=40, deadline=None)
@given(log_n=st.integers(0, 11), rows=st.integers(0, 9), scale=st.floats(0.01, 4.0))
def test_native_matches_reference_property(log_n, rows, scale):
    from liteffn import ops, testing

    n = 2**log_n
    x = torch.randn(rows, n)
    for level in testing.isa_levels():
        with ops.use_isa(level):
            assert_exact(fwht_native_(x.clone(), scale), fwht_reference(x, scale))


def test_nan_and_inf_stay_in_their_rows(isa):
    x = torch.randn(4, 16)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    y = fwht_native_(x.clone())
    assert torch.isnan(y[1]).all()
    assert torch.isfinite(y[0]).all() and torch.isfinite(y[3]).all()
    assert_exact(y, fwht_reference(x))


def test_gradient_is_the_transform_itself():
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: fwht(t, 0.25), (x,))
    x32 = torch.randn(3, 16, requires_grad=True)
    g = torch.randn(3, 16)
    fwht(x32, 0.25).backward(g)
    assert_kernel_close(x32.grad, fwht_reference(g, 0.25))


def test_opcheck():
    x = torch.randn(4, 32, requires_grad=True)
    torch.library.opcheck(torch.ops.liteffn.fwht.default, (x, 0.5))


@pytest.mark.parametrize("n", [0, 3, 12])
def test_rejects_non_power_of_two(n):
    with pytest.raises(ValueError, match="power of two"):
        fwht(torch.randn(2, n))


def test_native_rejects_wrong_dtype_and_layout():
    with pytest.raises(TypeError, match="float32"):
        fwht_native_(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        fwht_native_(torch.randn(8, 4).t())
