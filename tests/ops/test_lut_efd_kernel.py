"""Native EFD input gradient (LUT training backward) vs the PyTorch formulation."""

import pytest
import torch

from liteffn.layers.lut import LUTLayer, efd_weights
from liteffn.ops.lut import lut_efd_input_grad
from liteffn.testing import assert_exact, assert_kernel_close


def _torch_input_grad(grad, addr, weights, mapping, in_features):
    # The same sum as the kernel, in float64: grad_bits[t, mapping[j, l]] += g[t, j] * w[l, j, a].
    gb = torch.zeros(grad.shape[0], in_features, dtype=torch.float64)
    addr_t = addr.t().long()  # (out, N)
    for l in range(mapping.shape[1]):
        w = weights[l].double().gather(1, addr_t).t()  # (N, out)
        gb.index_add_(1, mapping[:, l], grad.double() * w)
    return gb


@pytest.mark.parametrize(
    ("n_tok", "out", "n", "in_features"),
    [(0, 5, 3, 7), (1, 4, 2, 6), (37, 50, 6, 40), (9, 8, 1, 3)],
)
def test_native_matches_formula(isa, n_tok, out, n, in_features):
    g = torch.Generator().manual_seed(n_tok + out)
    grad = torch.randn(n_tok, out, generator=g)
    addr = torch.randint(0, 1 << n, (n_tok, out), generator=g).to(torch.uint8)
    weights = torch.randn(n, out, 1 << n, generator=g)
    mapping = torch.randint(0, in_features, (out, n), generator=g)
    got = lut_efd_input_grad(grad, addr, weights, mapping, in_features)
    assert_kernel_close(got, _torch_input_grad(grad, addr, weights, mapping, in_features).float())


def test_layer_backward_uses_native_and_matches_float64(isa):
    layer = LUTLayer(24, 16, lut_inputs=4)
    bits = (torch.rand(33, 24) > 0.5).float()
    g = torch.randn(33, 16)
    bits32 = bits.clone().requires_grad_()
    layer(bits32).backward(g)
    layer64 = LUTLayer(24, 16, lut_inputs=4).double()
    layer64.load_state_dict(
        {k: v.double() if v.is_floating_point() else v for k, v in layer.state_dict().items()}
    )
    bits64 = bits.double().requires_grad_()
    layer64(bits64).backward(g.double())
    assert_kernel_close(bits32.grad, bits64.grad.float())


def test_deterministic_across_threads(isa):
    grad = torch.randn(64, 32)
    addr = torch.randint(0, 64, (64, 32)).to(torch.uint8)
    weights = efd_weights(torch.rand(32, 64) * 2 - 1).contiguous()
    mapping = torch.randint(0, 20, (32, 6))
    first = lut_efd_input_grad(grad, addr, weights, mapping, 20)
    saved = torch.get_num_threads()
    torch.set_num_threads(1 if saved > 1 else 2)
    try:
        assert_exact(lut_efd_input_grad(grad, addr, weights, mapping, 20), first)
    finally:
        torch.set_num_threads(saved)


def test_bad_arguments_are_refused_before_the_kernel(isa):
    grad = torch.randn(2, 3)
    addr = torch.zeros(2, 3, dtype=torch.uint8)
    weights = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="mapping entry out of"):
        lut_efd_input_grad(grad, addr, weights, torch.full((3, 2), 9), 5)
    with pytest.raises(TypeError, match="uint8"):
        lut_efd_input_grad(grad, addr.int(), weights, torch.zeros(3, 2, dtype=torch.int64), 5)
    with pytest.raises(ValueError, match="shape"):
        lut_efd_input_grad(
            grad, addr, torch.randn(2, 3, 8), torch.zeros(3, 2, dtype=torch.int64), 5
        )
