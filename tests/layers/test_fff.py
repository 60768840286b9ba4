import copy
import io

import pytest
import torch
import torch.nn.functional as F

from liteffn import Cost, FastFeedForward
from liteffn.layers.fff import load_ultrafastbert_ffns
from liteffn.ops.fff import fff_paths
from liteffn.testing import assert_exact, assert_kernel_close


def grid_(t: torch.Tensor) -> torch.Tensor:
    """Fill with multiples of 1/8 in [-1, 1]: dot products are exact in any order (see ops test)."""
    with torch.no_grad():
        return t.copy_(torch.randint(-8, 9, t.shape).float() / 8)


def grid_layer(d=32, depth=5, trees=1, bias_out=False) -> FastFeedForward:
    ffn = FastFeedForward(d, depth=depth, trees=trees, bias_out=bias_out)
    grid_(ffn.w_in), grid_(ffn.b_in)
    if bias_out:
        with torch.no_grad():
            ffn.b_out.normal_()
    return ffn


def masked_dense(ffn: FastFeedForward, x: torch.Tensor) -> torch.Tensor:
    """UltraFastBERT's training formulation: every neuron computed, then masked to the path."""
    logits = F.linear(x, ffn.w_in, ffn.b_in)  # (N, trees*nodes)
    dec = (logits > 0).long().view(x.shape[0], ffn.trees, ffn.nodes)
    mask = torch.zeros_like(dec, dtype=x.dtype)  # (N, trees, nodes)
    node = torch.zeros(x.shape[0], ffn.trees, 1, dtype=torch.long)
    for _ in range(ffn.depth + 1):
        mask.scatter_(2, node, 1.0)
        node = (2 * node + 1 + dec.gather(2, node)).clamp_max(ffn.nodes - 1)
    y = (F.gelu(logits) * mask.view_as(logits)) @ ffn.w_out
    return y if ffn.b_out is None else y + ffn.b_out


@pytest.mark.parametrize(
    ("depth", "trees", "bias_out"), [(0, 1, False), (4, 2, True), (7, 3, False)]
)
def test_train_eval_reference_agree(isa, depth, trees, bias_out):
    ffn = grid_layer(24, depth, trees, bias_out)
    x = torch.randint(-8, 9, (3, 5, 24)).float() / 8
    y_ref = ffn.reference(x)
    assert y_ref.shape == x.shape
    assert_kernel_close(ffn.eval()(x), y_ref, what="eval")
    assert_kernel_close(ffn.train()(x), y_ref, what="train")
    assert_kernel_close(masked_dense(ffn, x.view(-1, 24)).view_as(x).detach(), y_ref)


@pytest.mark.parametrize(
    ("depth", "trees", "bias_out"), [(0, 1, True), (3, 1, False), (5, 3, True)]
)
def test_gradients_match_masked_dense_float64(depth, trees, bias_out):
    ffn = FastFeedForward(12, depth=depth, trees=trees, bias_out=bias_out).double().train()
    x = torch.randn(50, 12, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(50, 12, dtype=torch.float64)
    params = [x, *ffn.parameters()]
    grads = torch.autograd.grad(ffn(x), params, gy)
    expected = torch.autograd.grad(masked_dense(ffn, x), params, gy)
    for got, exp in zip(grads, expected, strict=True):
        assert_kernel_close(got, exp)  # float64: rtol 1e-9
    # rows no token visited get exactly zero gradient
    idx, _ = fff_paths(x.detach(), ffn.w_in, ffn.b_in, depth, trees)
    unvisited = torch.ones(ffn.w_out.shape[0], dtype=torch.bool)
    unvisited[idx.reshape(-1)] = False
    assert (grads[3][unvisited] == 0).all() and (grads[1][unvisited] == 0).all()


def test_float32_training_uses_kernel_routing_and_matches_torch_path(isa):
    ffn = grid_layer(40, 6, 2, bias_out=True).train()
    x = (torch.randint(-8, 9, (70, 40)).float() / 8).requires_grad_()
    y = ffn(x)
    y.square().sum().backward()
    got = [x.grad, *(p.grad for p in ffn.parameters())]
    ffn64 = FastFeedForward(40, 6, 2, bias_out=True).double()
    ffn64.load_state_dict(ffn.state_dict())
    x64 = x.detach().double().requires_grad_()
    y64 = ffn64(x64)
    y64.square().sum().backward()
    assert_kernel_close(y.detach(), y64.detach().float())
    for g, e in zip(got, [x64.grad, *(p.grad for p in ffn64.parameters())], strict=True):
        assert_kernel_close(g, e.float(), rtol=1e-4)


@pytest.mark.parametrize("shape", [(0, 16), (1, 16), (7, 16), (2, 3, 16), (2, 0, 16)])
def test_eval_shapes(isa, shape):
    ffn = grid_layer(16, 4, 2).eval()
    x = torch.randint(-8, 9, shape).float() / 8
    y = ffn(x)
    assert y.shape == x.shape
    assert_kernel_close(y, ffn.reference(x))


def test_non_contiguous_and_grad_inputs(isa):
    ffn = grid_layer(16, 4).eval()
    x = (torch.randint(-8, 9, (16, 9)).float() / 8).t()  # (9, 16), non-contiguous
    assert_kernel_close(ffn(x), ffn.reference(x.contiguous()))
    xg = x.contiguous().requires_grad_()
    assert_kernel_close(ffn(xg).detach(), ffn.reference(x))


def test_double_module_uses_reference_in_eval():
    ffn = grid_layer(16, 3).double().eval()
    x = torch.randint(-8, 9, (5, 16)).double() / 8
    assert ffn(x).dtype == torch.float64
    assert_kernel_close(ffn(x), ffn.reference(x))


def test_depth_16_eval(isa):
    ffn = grid_layer(4, 16).eval()
    x = torch.randint(-8, 9, (9, 4)).float() / 8
    assert_kernel_close(ffn(x), ffn.reference(x))


def test_cost():
    c = FastFeedForward(768, depth=11).cost()
    assert isinstance(c, Cost)
    assert c.flops_per_token == 12 * 4 * 768
    assert c.param_bytes == 4 * (2 * 4095 * 768 + 4095)
    assert c.bytes_per_token == 12 * 4 * (2 * 768 + 1)
    assert FastFeedForward(8, 3, trees=2).cost().flops_per_token == 2 * 4 * 4 * 8


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"depth": -1}, r"depth must be in \[0, 20\], got -1"),
        ({"trees": 0}, "trees must be >= 1, got 0"),
        ({"leaf_width": -2}, "leaf_width must be >= 0, got -2"),
        ({"leaf_width": 4, "region_leak": 0.7}, "region_leak"),
    ],
)
def test_bad_constructor_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        FastFeedForward(8, **kwargs)


# -- original FFF form (leaves) ------------------------------------------------------------


def test_leaf_form_hard_decisions_make_soft_equal_hard():
    torch.manual_seed(3)
    ffn = FastFeedForward(10, depth=3, trees=2, leaf_width=5, bias_out=True).double()
    with torch.no_grad():
        ffn.w_in.mul_(1e4)  # saturated sigmoids: the soft mixture is one-hot
        ffn.b_out.normal_()
    x = torch.randn(30, 10, dtype=torch.float64)
    soft = ffn.train()(x)
    assert ffn.hardening_loss().item() < 1e-6
    assert_kernel_close(soft.detach(), ffn.eval()(x))
    assert_kernel_close(ffn.reference(x), ffn.eval()(x))


def test_leaf_form_hard_path_by_hand():
    ffn = FastFeedForward(6, depth=2, leaf_width=3).eval()
    x = torch.randn(4, 6)
    y = ffn(x)
    for i in range(4):
        node = 0
        for _ in range(2):
            a = x[i] @ ffn.w_in[node] + ffn.b_in[node]
            node = 2 * node + (2 if a > 0 else 1)
        leaf = node - 3
        h = F.gelu(ffn.leaf_w1[leaf] @ x[i] + ffn.leaf_b1[leaf])
        assert_kernel_close(y[i], h @ ffn.leaf_w2[leaf] + ffn.leaf_b2[leaf])


def test_leaf_form_training_and_hardening_loss_are_differentiable():
    ffn = FastFeedForward(8, depth=3, leaf_width=4).train()
    x = torch.randn(16, 8)
    y = ffn(x)
    h = ffn.hardening_loss()
    assert 0 < h.item() <= torch.log(torch.tensor(2.0)).item() + 1e-6
    (y.square().mean() + 0.1 * h).backward()
    assert ffn.w_in.grad.abs().sum() > 0 and ffn.leaf_w1.grad.abs().sum() > 0
    x64 = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(FastFeedForward(8, 2, leaf_width=3).double().train(), (x64,))


def test_leaf_form_region_leak_flips_decisions_in_training_only():
    ffn = FastFeedForward(8, depth=3, leaf_width=4, region_leak=0.3)
    x = torch.randn(64, 8)
    torch.manual_seed(0)
    a = ffn.train()(x)
    torch.manual_seed(1)
    b = ffn(x)
    assert not torch.allclose(a, b)
    assert_exact(ffn.eval()(x), ffn.eval()(x))


def test_hardening_loss_needs_leaf_training_forward():
    with pytest.raises(RuntimeError, match="leaf_width"):
        FastFeedForward(8, depth=2).hardening_loss()


# -- UltraFastBERT checkpoint loader --------------------------------------------------------


def ultrafastbert_state_dict(d=16, depth=3, trees=2, layers=2):
    rows = trees * (2 ** (depth + 1) - 1)
    sd = {"embeddings.word_embeddings.weight": torch.randn(50, d)}
    for i in range(layers):
        p = f"encoder.layers.{i}.ffn."
        sd[p + "linear_in.weight"] = torch.randn(rows, d)
        sd[p + "linear_in.bias"] = torch.randn(rows)
        sd[p + "linear_out.weight"] = torch.randn(d, rows)
        sd[f"encoder.layers.{i}.attn.qkv.weight"] = torch.randn(3 * d, d)
    return sd


def test_loader_transposes_linear_out_and_computes_the_ultrafastbert_function():
    sd = ultrafastbert_state_dict()
    layers = load_ultrafastbert_ffns(sd, depth=3)
    assert sorted(layers) == [0, 1]
    ffn = layers[1]
    assert (ffn.trees, ffn.depth, ffn.d_model) == (2, 3, 16)
    assert_exact(ffn.w_out.detach(), sd["encoder.layers.1.ffn.linear_out.weight"].t())
    assert ffn.w_out.is_contiguous()
    x = torch.randn(9, 16, dtype=torch.float64)
    ffn64 = ffn.double()
    # UltraFastBERT: linear_out(masked gelu(linear_in(x)))
    assert_kernel_close(ffn64.reference(x), masked_dense(ffn64, x))


def test_loader_errors_name_expected_and_got():
    sd = ultrafastbert_state_dict(depth=3, trees=1)
    with pytest.raises(ValueError, match=r"multiple of 31 rows \(depth=4\), got shape \(15, 16\)"):
        load_ultrafastbert_ffns(sd, depth=4)
    with pytest.raises(KeyError, match="found none"):
        load_ultrafastbert_ffns({"x": torch.zeros(1)})
    ffn = FastFeedForward(16, depth=3, trees=2)
    with pytest.raises(ValueError, match=r"expected shape \(30, 16\).*got \(15, 16\)"):
        ffn.load_ultrafastbert_(sd, 0)
    with pytest.raises(KeyError, match=r"encoder\.layers\.5\.ffn\.linear_in\.weight"):
        ffn.load_ultrafastbert_(sd, 5)


def test_eval_fast_path_respects_hooks_and_weight_changes(isa):
    ffn = grid_layer(16, 4, bias_out=True).eval()
    x = torch.randint(-8, 9, (5, 16)).float() / 8
    seen = []
    handle = ffn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    y = ffn(x)
    handle.remove()
    assert seen == [(5, 16)]
    assert_kernel_close(y, ffn.reference(x))
    with torch.no_grad():
        ffn.w_out.mul_(2)  # in place: same storage
        ffn.b_out.add_(1)
    assert_kernel_close(ffn(x), ffn.reference(x))
    ffn.double()  # new storage and dtype: the reference path takes over
    assert ffn(x.double()).dtype == torch.float64
    ffn.float()
    ffn.w_in = torch.nn.Parameter(grid_(torch.empty(31, 16)))  # replaced parameter
    assert_kernel_close(ffn(x), ffn.reference(x))
    ffn.b_in.data = ffn.b_in.detach() + 0.25  # same Parameter object, new storage
    assert_kernel_close(ffn(x), ffn.reference(x))
    xg = x.clone().requires_grad_()  # an input that needs grad skips the kernel
    assert_kernel_close(ffn(xg).detach(), ffn.reference(x))
    assert_kernel_close(ffn(x[0]), ffn.reference(x[:1])[0])  # 1-D input


def test_eval_fast_path_declines_unusual_inputs_and_pickles(isa):
    # the native FFFEval returns None for anything it was not built for; the layer then takes
    # its checked path, so every case below still gives the reference result or a clear error
    ffn = grid_layer(16, 3, bias_out=True).eval()
    x = torch.randint(-8, 9, (6, 16)).float() / 8
    assert_kernel_close(ffn(x), ffn.reference(x))  # builds the FFFEval
    assert ffn._eval_call is not None
    assert_kernel_close(ffn(x.t().contiguous().t()), ffn.reference(x))  # non-contiguous
    assert_kernel_close(ffn(x.view(2, 3, 16)), ffn.reference(x).view(2, 3, 16))  # 3-D
    assert ffn(x[:0]).shape == (0, 16)  # empty batch
    with pytest.raises(ValueError, match="last dimension d_model=16"):
        ffn(torch.zeros(3, 15))
    with pytest.raises(ValueError, match="0-d"):
        ffn(torch.tensor(1.0))
    with torch.no_grad():
        ffn.b_in.data = ffn.b_in.detach() + 0.25  # new storage: rebuilt, not stale
    assert_kernel_close(ffn(x), ffn.reference(x))
    clone = copy.deepcopy(ffn)
    with torch.no_grad():
        clone.w_out.mul_(2)  # the copy owns its weights: the original is unchanged
    assert_kernel_close(clone(x), clone.reference(x))
    assert_kernel_close(ffn(x), ffn.reference(x))
    buf = io.BytesIO()
    torch.save(ffn, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded._eval_call is None  # rebuilt on the first call, never pickled
    assert torch.equal(loaded(x), ffn(x))


@pytest.mark.slow
def test_more_tokens_than_one_kernel_block(isa):
    # the bucketed schedule works in blocks of 65536 tokens; cross a block boundary
    ffn = grid_layer(3, 6, trees=2).eval()
    x = torch.randint(-8, 9, (70001, 3)).float() / 8
    saved = torch.get_num_threads()
    try:
        for nthreads in (1, 2):
            torch.set_num_threads(nthreads)
            assert_kernel_close(ffn(x), ffn.reference(x))
    finally:
        torch.set_num_threads(saved)


def test_eval_of_a_large_layer_advises_huge_pages_and_stays_exact(isa):
    # w_in / w_out of 8 MiB and more are backed by huge pages on the first eval call (in place)
    ffn = grid_layer(512, 11).eval()
    w_out = ffn.w_out.detach().clone()
    x = torch.randint(-8, 9, (70, 512)).float() / 8
    assert_kernel_close(ffn(x), ffn.reference(x))
    assert torch.equal(ffn.w_out, w_out)
    assert_kernel_close(ffn(x[:3]), ffn.reference(x[:3]))
