import pytest

from liteffn import Cost


def test_cost_validates_and_compares():
    a = Cost(flops_per_token=100, param_bytes=10, bytes_per_token=5)
    b = Cost(flops_per_token=400, param_bytes=10, bytes_per_token=5)
    assert a.flops_ratio(b) == 4.0
    assert "MFLOP" in str(a)
    with pytest.raises(ValueError, match="non-negative int"):
        Cost(flops_per_token=-1, param_bytes=0, bytes_per_token=0)
