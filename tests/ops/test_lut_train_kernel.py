"""Native LUT training forward and table gradient vs the plain PyTorch formulation."""

import pytest
import torch

from liteffn.layers.lut import LUTLayer, _addresses
from liteffn.ops.lut import lut_table_grad, lut_train_forward
from liteffn.testing import assert_exact, assert_kernel_close


def _torch_forward(bits, mapping, table):
    # The plain PyTorch path of LUTLayer: LSB-first addresses, then the sign of the table entry.
    addr = _addresses(bits, mapping)  # (N, out) uint8
    values = table.gather(1, addr.t().long()).t()  # (N, out)
    return addr, (values > 0).to(bits.dtype)


def _torch_table_grad(grad, addr, size):
    # grad_table[j, addr[t, j]] += grad[t, j], in float64.
    out = grad.shape[1]
    flat = addr.long() + torch.arange(out) * size  # (N, out) indices into (out * size,)
    gt = torch.zeros(out * size, dtype=torch.float64)
    gt.index_add_(0, flat.reshape(-1), grad.double().reshape(-1))
    return gt.view(out, size)


SHAPES = [(0, 5, 3, 7), (1, 4, 2, 6), (37, 50, 6, 40), (9, 8, 1, 3), (130, 70, 5, 300)]


@pytest.mark.parametrize(("n_tok", "out", "n", "in_features"), SHAPES)
def test_forward_matches_torch(isa, n_tok, out, n, in_features):
    g = torch.Generator().manual_seed(n_tok + out + n)
    bits = torch.randint(0, 2, (n_tok, in_features), generator=g).float()
    mapping = torch.randint(0, in_features, (out, n), generator=g)
    table = torch.rand(out, 1 << n, generator=g) * 2 - 1
    table[0, 0] = 0.0  # exactly zero is "off"
    if out > 1:
        table[1, :] = float("nan")  # NaN is "off" too
    addr, y = lut_train_forward(bits, mapping, table)
    want_addr, want_y = _torch_forward(bits, mapping, table)
    assert_exact(addr, want_addr)
    assert_exact(y, want_y)


@pytest.mark.parametrize(("n_tok", "out", "n", "in_features"), SHAPES)
def test_table_grad_matches_float64(isa, n_tok, out, n, in_features):
    g = torch.Generator().manual_seed(n_tok * 3 + out)
    grad = torch.randn(n_tok, out, generator=g)
    addr = torch.randint(0, 1 << n, (n_tok, out), generator=g).to(torch.uint8)
    got = lut_table_grad(grad, addr, 1 << n)
    assert_kernel_close(got, _torch_table_grad(grad, addr, 1 << n).float())


def test_table_grad_deterministic_across_threads(isa):
    grad = torch.randn(300, 130)
    addr = torch.randint(0, 64, (300, 130)).to(torch.uint8)
    first = lut_table_grad(grad, addr, 64)
    saved = torch.get_num_threads()
    torch.set_num_threads(1 if saved > 1 else 2)
    try:
        assert_exact(lut_table_grad(grad, addr, 64), first)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("mapping_kind", ["random", "learnable"])
def test_layer_native_training_matches_float64(isa, mapping_kind):
    # float32 runs the native forward + both native gradients; float64 runs plain PyTorch.
    torch.manual_seed(5)
    layer = LUTLayer(24, 16, lut_inputs=4, mapping=mapping_kind)
    layer64 = LUTLayer(24, 16, lut_inputs=4, mapping=mapping_kind).double()
    layer64.load_state_dict(
        {k: v.double() if v.is_floating_point() else v for k, v in layer.state_dict().items()}
    )
    bits = (torch.rand(33, 24) > 0.5).float()
    g = torch.randn(33, 16)
    bits32 = bits.clone().requires_grad_()
    y32 = layer(bits32)
    y32.backward(g)
    bits64 = bits.double().requires_grad_()
    y64 = layer64(bits64)
    y64.backward(g.double())
    assert_exact(y32, y64.float())
    assert_kernel_close(bits32.grad, bits64.grad.float())
    assert_kernel_close(layer.table.grad, layer64.table.grad.float())


def test_bad_arguments_are_refused_before_the_kernel():
    bits = torch.zeros(2, 5)
    table = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="mapping entry out of"):
        lut_train_forward(bits, torch.full((3, 2), 9), table)
    with pytest.raises(TypeError, match=r"expected dtype torch\.int64, got torch\.int32"):
        lut_train_forward(bits, torch.zeros(3, 2, dtype=torch.int32), table)
    with pytest.raises(ValueError, match=r"expected shape \(3, 4\), got \(3, 8\)"):
        lut_train_forward(bits, torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 8))
    with pytest.raises(TypeError, match=r"expected dtype torch\.float32, got torch\.float64"):
        lut_train_forward(bits.double(), torch.zeros(3, 2, dtype=torch.int64), table)
    with pytest.raises(ValueError, match="contiguous"):
        lut_train_forward(torch.zeros(5, 2).t(), torch.zeros(3, 2, dtype=torch.int64), table)
    with pytest.raises(TypeError, match=r"expected dtype torch\.uint8, got torch\.int32"):
        lut_table_grad(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="power of two"):
        lut_table_grad(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.uint8), 6)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_efd_weights_match_torch(isa, n):
    from liteffn.layers.lut import BETA, efd_alpha, efd_weights
    from liteffn.ops.lut import lut_efd_weights

    table = torch.rand(70, 1 << n, generator=torch.Generator().manual_seed(n)) * 2 - 1
    got = lut_efd_weights(table, efd_alpha(n), BETA)  # (out, 2^n, n)
    want = efd_weights(table.double()).permute(1, 2, 0)  # (n, out, 2^n) -> (out, 2^n, n)
    assert_kernel_close(got, want.float())
