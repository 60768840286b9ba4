"""LUTLayer / LUTFFN: EFD backward vs brute force, thermometer, training, reference path."""

import itertools
import math

import pytest
import torch

from liteffn import Cost
from liteffn.config import LUTConfig
from liteffn.layers.lut import LUTFFN, LUTLayer, efd_alpha, efd_weights, thermometer
from liteffn.testing import assert_exact, assert_kernel_close

BETA = 1.0 / 3.0


def brute_efd_weight(table: torch.Tensor, j: int, l: int, addr: int) -> float:
    """The EFD formula term by term: alpha * sum_a s_l(a) * beta^H_l(addr, a) * table[j, a]."""
    size = table.shape[1]
    n = size.bit_length() - 1
    total = 0.0
    for a in range(size):
        sign = 1.0 if (a >> l) & 1 else -1.0
        hamming = bin((addr ^ a) & ~(1 << l)).count("1")
        total += sign * BETA**hamming * table[j, a].item()
    return efd_alpha(n) * total


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_efd_weights_match_brute_force(n):
    table = torch.rand(3, 2**n, dtype=torch.float64) * 2 - 1
    w = efd_weights(table)
    assert w.shape == (n, 3, 2**n)
    expected = torch.tensor(
        [
            [[brute_efd_weight(table, j, l, a) for a in range(2**n)] for j in range(3)]
            for l in range(n)
        ],
        dtype=torch.float64,
    )
    assert_kernel_close(w, expected)


def test_efd_alpha():
    assert efd_alpha(1) == 0.5 and efd_alpha(6) == 0.5 * 0.75**5


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_lut_layer_backward_matches_brute_force(n):
    in_f, out_f, N = 13, 7, 9
    layer = LUTLayer(in_f, out_f, lut_inputs=n).double()
    bits = torch.randint(0, 2, (N, in_f)).double().requires_grad_()
    grad = torch.randn(N, out_f, dtype=torch.float64)
    y = layer(bits)
    y.backward(grad)
    table, m = layer.table.detach(), layer.mapping
    exp_bits = torch.zeros(N, in_f, dtype=torch.float64)
    exp_table = torch.zeros_like(table)
    exp_out = torch.zeros(N, out_f, dtype=torch.float64)
    for i in range(N):
        for j in range(out_f):
            addr = sum(int(bits[i, m[j, l]].item()) << l for l in range(n))
            exp_out[i, j] = float(table[j, addr] > 0)
            exp_table[j, addr] += grad[i, j]
            for l in range(n):
                exp_bits[i, m[j, l]] += grad[i, j] * brute_efd_weight(table, j, l, addr)
    assert_exact(y.detach(), exp_out)
    assert_kernel_close(layer.table.grad, exp_table)
    assert_kernel_close(bits.grad, exp_bits)


def test_addresses_are_least_significant_first():
    layer = LUTLayer(3, 1, lut_inputs=3)
    layer.mapping.copy_(torch.tensor([[2, 0, 1]]))
    with torch.no_grad():
        layer.table.fill_(-1.0)
        layer.table[0, 0b101] = 0.5  # slot 0 and slot 2 set: inputs 2 and 1
    bits = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    assert layer(bits).flatten().tolist() == [1.0, 0.0, 0.0]
    assert layer.reference_bits(bits.bool()).flatten().tolist() == [True, False, False]


def test_table_zero_gives_zero_and_tables_are_clamped():
    layer = LUTLayer(4, 2, lut_inputs=2)
    with torch.no_grad():
        layer.table.zero_()
        layer.table[1] = 3.0
    out = layer(torch.ones(1, 4))
    assert out.tolist() == [[0.0, 1.0]]
    assert layer.table.abs().max().item() == 1.0  # clamped by the training forward


def test_random_mapping_spreads_inputs_evenly():
    layer = LUTLayer(100, 50, lut_inputs=6)  # 300 slots = 3 permutations of 100 inputs
    counts = torch.bincount(layer.mapping.flatten(), minlength=100)
    assert counts.min().item() == 3 and counts.max().item() == 3
    assert layer.table.shape == (50, 64) and layer.table.abs().max() <= 1


def test_table_gradient_is_deterministic():
    layer = LUTLayer(64, 256, lut_inputs=6)
    bits = torch.randint(0, 2, (512, 64)).float().requires_grad_()
    grad = torch.randn(512, 256)
    grads = []
    with torch.autograd.set_detect_anomaly(False):
        torch.use_deterministic_algorithms(True)
        try:
            for _ in range(2):
                layer.table.grad, bits.grad = None, None
                layer(bits).backward(grad)
                grads.append((layer.table.grad.clone(), bits.grad.clone()))
        finally:
            torch.use_deterministic_algorithms(False)
    assert_exact(grads[0][0], grads[1][0])
    assert_exact(grads[0][1], grads[1][1])


def test_learnable_mapping_argmax_and_gradients():
    torch.manual_seed(1)
    layer = LUTLayer(10, 4, lut_inputs=3, mapping="learnable").double()
    w = layer.mapping_weight
    assert_exact(layer.mapping, w.argmax(1).view(4, 3))
    bits = torch.randint(0, 2, (6, 10)).double().requires_grad_()
    grad = torch.randn(6, 4, dtype=torch.float64)
    y = layer(bits)
    y.backward(grad)
    # Forward equals the fixed-mapping layer with the argmax mapping.
    fixed = LUTLayer(10, 4, lut_inputs=3).double()
    fixed.mapping.copy_(layer.mapping)
    fixed.table.data.copy_(layer.table.data)
    assert_exact(y.detach(), fixed(bits.detach()))
    # d weight[s, i] = sum_b g_sel[b, s] * (2 * bits[b, i] - 1), g_sel the EFD slot gradient.
    weights = efd_weights(layer.table.detach())  # (n, out, 2^n)
    addr = sum(bits.detach()[:, layer.mapping[:, l]].long() << l for l in range(3))  # (6, 4)
    g_sel = torch.stack(
        [grad * weights[l].gather(1, addr.t()).t() for l in range(3)], dim=2
    ).reshape(6, 12)  # (N, out*n)
    assert_kernel_close(w.grad, g_sel.t() @ (2 * bits.detach() - 1))
    soft = torch.softmax(w.detach() / layer.mapping_tau, dim=1)
    assert_kernel_close(bits.grad, g_sel @ soft)
    # After a step that moves a slot's argmax, the mapping buffer follows.
    with torch.no_grad():
        w[0].zero_()
        w[0, 7] = 5.0
    layer.sync_mapping()
    assert layer.mapping[0, 0].item() == 7


def test_thermometer_ties_nan_and_layout():
    t = torch.tensor([[0.0, 1.0], [-1.0, 2.0]])
    x = torch.tensor([[0.0, 2.0], [0.5, float("nan")], [1.0, float("inf")]])
    bits = thermometer(x, t)
    assert bits.tolist() == [
        [False, False, True, False],  # x == threshold gives 0
        [True, False, False, False],  # NaN gives 0
        [True, False, True, True],
    ]


def test_thresholds_init_and_fit():
    ffn = LUTFFN(4, bits_per_channel=3, hidden_luts=8, luts_per_output=2, lut_inputs=2)
    q = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    expected = torch.special.ndtri(q).float()
    assert_exact(ffn.thresholds.detach(), expected.expand(4, 3).contiguous())
    x = torch.arange(101, dtype=torch.float32).unsqueeze(1).repeat(1, 4) * torch.tensor(
        [1.0, 2.0, -1.0, 0.5]
    )
    ffn.fit(x)
    assert_kernel_close(
        ffn.thresholds.detach(),
        torch.quantile(x, q.float(), dim=0).t().contiguous(),
    )


def test_thermometer_straight_through_gradient():
    ffn = LUTFFN(3, bits_per_channel=4, hidden_luts=(), luts_per_output=2, lut_inputs=2)
    x = torch.randn(5, 3, requires_grad=True)
    ffn(x).sum().backward()
    assert ffn.thresholds.grad is not None and ffn.thresholds.grad.abs().sum() > 0
    # Identity gradient: d x_c = sum_i g_{c,i}, d t_{c,i} = -sum_b g_{b,c,i}.
    bits = torch.zeros(5, 12, requires_grad=True)
    from liteffn.layers.lut import _Thermometer

    xx = torch.randn(5, 3, requires_grad=True)
    tt = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(5, 12)
    _Thermometer.apply(xx, tt).backward(g)
    assert_kernel_close(xx.grad, g.view(5, 3, 4).sum(2))
    assert_kernel_close(tt.grad, -g.view(5, 3, 4).sum(0))
    del bits


@pytest.mark.parametrize("hidden", [None, 24, (16, 12), ()])
def test_layer_structure(hidden):
    ffn = LUTFFN(2, bits_per_channel=4, hidden_luts=hidden, luts_per_output=3, lut_inputs=3)
    sizes = {None: [32], 24: [24], (16, 12): [16, 12], (): []}[hidden]
    widths = [2 * 4, *sizes, 2 * 3]
    assert [(m.in_features, m.out_features) for m in ffn.layers] == list(itertools.pairwise(widths))


def test_config_builds_the_same_layer():
    ffn = LUTConfig(bits_per_channel=4, luts_per_output=8, lut_inputs=5).build(d_model=6)
    assert isinstance(ffn, LUTFFN)
    assert ffn.hidden_luts == [16 * 6] and ffn.luts_per_output == 8 and ffn.lut_inputs == 5
    assert LUTFFN(6).hidden_luts == [96]


def test_train_path_equals_reference_values_and_shapes():
    ffn = LUTFFN(5, bits_per_channel=6, hidden_luts=(40, 30), luts_per_output=4, lut_inputs=4)
    x = torch.randn(3, 7, 5)
    y_train = ffn.train()(x)
    ffn.eval()
    assert_exact(y_train.detach(), ffn.reference(x))
    assert_exact(ffn(x), ffn.reference(x))
    assert ffn(torch.randn(0, 5)).shape == (0, 5)
    xt = torch.randn(5, 9).t()  # (9, 5), non-contiguous
    assert_exact(ffn(xt), ffn.reference(xt.contiguous()))
    # Each output is scale * (2 * count / g - 1) + shift for an integer count in [0, g].
    counts = (ffn.reference(x) + 1.0) * 4 / 2
    assert_exact(counts, counts.round())


def test_affine_formula():
    ffn = LUTFFN(2, bits_per_channel=2, hidden_luts=(), luts_per_output=4, lut_inputs=2)
    with torch.no_grad():
        ffn.scale.copy_(torch.tensor([2.0, -0.5]))
        ffn.shift.copy_(torch.tensor([0.25, 1.0]))
        ffn.layers[0].table.fill_(1.0)
        ffn.layers[0].table[4, 0] = -1.0  # channel 0 all on; channel 1: LUT 4 off at addr 0
    ffn.layers[0].mapping.zero_()  # every LUT reads bit 0 (channel 0, level 0)
    y = ffn.reference(torch.tensor([[-5.0, 0.0]]))  # bit 0 is 0: address 0
    assert y.tolist() == [[2.0 * 1.0 + 0.25, -0.5 * (2 * 3 / 4 - 1) + 1.0]]


def test_param_groups_split_tables():
    ffn = LUTFFN(4, bits_per_channel=2, hidden_luts=8, luts_per_output=2, lut_inputs=2)
    groups = ffn.param_groups(1e-3)
    assert groups[0]["lr"] == pytest.approx(1e-2) and groups[1]["lr"] == 1e-3
    assert len(groups[0]["params"]) == 2 and len(groups[1]["params"]) == 3
    n_all = sum(p.numel() for p in ffn.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n_all
    assert ffn.param_groups(1e-3, table_lr=5e-2)[0]["lr"] == 5e-2


def test_cost():
    ffn = LUTFFN(192, bits_per_channel=8, hidden_luts=3072, luts_per_output=16, lut_inputs=6)
    c = ffn.cost()
    assert isinstance(c, Cost)
    assert c.flops_per_token == 192 * 8 + 2 * 3072 + 2 * 192
    stored = 4 * 192 * 8 + 6144 * 8 + 4 * 6144 * 6 + 4 * 192 * 17
    assert c.param_bytes == stored == c.bytes_per_token


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"d_model": 0}, "d_model"),
        ({"d_model": 4, "bits_per_channel": 0}, "bits_per_channel"),
        ({"d_model": 4, "luts_per_output": 0}, "luts_per_output"),
        ({"d_model": 4, "lut_inputs": 7}, "lut_inputs must be in \\[1, 6\\], got 7"),
        ({"d_model": 4, "hidden_luts": (8, 0)}, "hidden layer sizes"),
        ({"d_model": 4, "hidden_luts": "8"}, "hidden_luts"),
        ({"d_model": 4, "first_mapping": "greedy"}, "'random' or 'learnable', got 'greedy'"),
    ],
)
def test_bad_constructor_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        LUTFFN(**kwargs)


def test_bad_inputs_name_expected_and_got():
    ffn = LUTFFN(8, bits_per_channel=2, hidden_luts=8, luts_per_output=2, lut_inputs=2)
    with pytest.raises(ValueError, match="d_model=8"):
        ffn(torch.randn(3, 7))
    with pytest.raises(TypeError, match="floating-point"):
        ffn.eval()(torch.ones(3, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expected bits of shape \(N, 16\), got \(3, 5\)"):
        ffn.layers[0](torch.zeros(3, 5))
    with pytest.raises(ValueError, match="empty batch"):
        ffn.fit(torch.randn(0, 8))


def test_training_beats_predicting_the_mean():
    """A small LUTFFN fits a nonlinear, channel-mixing target far better than the mean does."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        d = 8

        def target(x):
            return x.roll(1, dims=-1).abs() * torch.sign(x)

        x_train, x_test = torch.randn(2048, d), torch.randn(1024, d)
        ffn = LUTFFN(d, bits_per_channel=8, hidden_luts=128, luts_per_output=16, lut_inputs=6)
        ffn.fit(x_train)
        opt = torch.optim.Adam(ffn.param_groups(1e-2, table_lr=3e-2))
        ffn.train()
        for _ in range(250):
            idx = torch.randint(0, x_train.shape[0], (128,))
            loss = (ffn(x_train[idx]) - target(x_train[idx])).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        ffn.eval()
        with torch.no_grad():
            mse = (ffn(x_test) - target(x_test)).pow(2).mean().item()
        baseline = target(x_test).var(0).mean().item()  # predicting each channel's mean
    finally:
        torch.set_num_threads(saved)
    assert math.isfinite(mse) and mse < 0.6 * baseline, (mse, baseline)
