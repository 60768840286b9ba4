"""LookupFFN: the fused kernel equals reference(), training gradients equal plain autograd.

On ties: a code bit is the sign of z, so where some |z| is within float32 rounding of 0 the
kernel (different summation order) and the reference may legitimately pick different rows,
and the outputs then differ by a whole table row. The exactness tests therefore draw their
tokens with ``safe_tokens``: random normal tokens whose every projection coordinate (computed
in float64) is at least 1e-3 * rms(z) away from 0 -- about 1000x the float32 error of z -- so
no bit can flip and the comparison is exact under the tolerance policy. About 0.1% of
coordinates are rejected per token; nothing else about the inputs is constrained.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteffn import Cost, LookupFFN, ops, testing
from liteffn.config import LookupConfig
from liteffn.layers.bh4 import next_pow2
from liteffn.layers.lookup import codes_and_scores
from liteffn.ops import lookup as lookup_ops
from liteffn.testing import assert_exact, assert_kernel_close

MARGIN = 1e-3


def safe_tokens(layer: LookupFFN, n: int, seed: int = 0) -> torch.Tensor:
    """n random tokens (n, d) whose projection has no coordinate near 0 (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    ref = copy.deepcopy(layer).double()
    kept, tries = [], 0
    while sum(k.shape[0] for k in kept) < n:
        x = torch.randn(4 * n + 8, layer.d_model, generator=gen)
        with torch.no_grad():
            z = (
                ref.proj.reference(x.double())
                if layer.projection == "bh4"
                else ref.proj(x.double())
            )
        rms = z.pow(2).mean().sqrt()
        kept.append(x[(z.abs() > MARGIN * rms).all(dim=1)])
        tries += 1
        assert tries < 50, "could not draw tokens away from code ties"
    return torch.cat(kept)[:n]


def make(d, h, tau, projection="bh4", block=64, seed=0) -> LookupFFN:
    torch.manual_seed(seed)
    block = min(block, next_pow2(d))
    layer = LookupFFN(d, h, tau, projection, block).eval()
    with torch.no_grad():  # random, non-zero biases so every term is exercised
        layer.bias.normal_()
        layer.proj.bias.normal_(0, 0.1)
    return layer


def check_kernel(layer: LookupFFN, x: torch.Tensor, what: str = "") -> None:
    expected = layer.reference(x)
    for isa in testing.isa_levels():
        with testing.use_isa(isa):
            assert_kernel_close(layer(x), expected, what=f"{what} {isa} module")
            x2 = x.reshape(-1, layer.d_model).contiguous()
            for order in (1, 2):  # token-major and table-major loops
                got = layer._native_forward(x2, order).reshape(x.shape)
                assert_kernel_close(got, expected, what=f"{what} {isa} order={order}")


def test_set_table_dtype_repacks_after_writes_through_data():
    # .data writes move no version counter, so the packed copies cannot see them; the README
    # names set_table_dtype as the way to re-pack
    layer = make(48, 8, 4)
    layer(safe_tokens(layer, 6))  # packs
    with torch.no_grad():
        layer.tables.data.mul_(2.0)
        layer.proj.bias.data.add_(0.5)
    x = safe_tokens(layer, 6)  # clear of ties for the new projection
    layer.set_table_dtype(layer.table_dtype)
    assert_kernel_close(layer(x), layer.reference(x))


@pytest.mark.parametrize("projection", ["bh4", "dense"])
@pytest.mark.parametrize(
    ("d", "h", "tau", "block"),
    [
        (512, 128, 8, 64),
        (96, 12, 5, 16),
        (33, 7, 12, 1),
        (1, 3, 1, 1),
        (130, 9, 3, 256),
        # AVX-512 edges: widths and table counts off the 16-lane grid, every block size from 2
        # to 512 (masked GEMM column tails below 16, several 64-column register blocks above)
        (17, 5, 7, 2),
        (47, 19, 11, 4),
        (100, 33, 2, 8),
        (200, 17, 9, 32),
        (250, 24, 6, 128),
        (520, 40, 6, 512),
    ],
)
def test_kernel_matches_reference(projection, d, h, tau, block):
    layer = make(d, h, tau, projection, block)
    x = safe_tokens(layer, 45)
    check_kernel(layer, x, f"d={d} h={h} tau={tau} b={block} {projection}")


@settings(max_examples=30, deadline=None)
@given(
    d=st.integers(1, 140),
    h=st.integers(1, 20),
    tau=st.integers(1, 12),
    projection=st.sampled_from(["bh4", "dense"]),
    log_block=st.integers(0, 8),
    n=st.integers(0, 70),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_reference_property(d, h, tau, projection, log_block, n, seed):
    if not ops.native_available():
        pytest.skip("native module not built")
    layer = make(d, h, tau, projection, 2**log_block, seed)
    x = safe_tokens(layer, n, seed) if n else torch.randn(0, d)
    check_kernel(layer, x, f"d={d} h={h} tau={tau} {projection} n={n}")


def test_batch_shapes_3d_and_non_contiguous(isa):
    layer = make(80, 16, 6)
    x = safe_tokens(layer, 60)
    assert layer(torch.randn(0, 80)).shape == (0, 80)
    assert layer(torch.randn(2, 0, 80)).shape == (2, 0, 80)
    for xs in (x[:1], x[:7], x.reshape(3, 20, 80), x.reshape(3, 20, 80).transpose(0, 1)):
        assert_kernel_close(layer(xs), layer.reference(xs), what=f"shape {tuple(xs.shape)}")
    wide = torch.zeros(60, 160)
    wide[:, ::2] = x
    strided = wide[:, ::2]  # (60, 80) with stride 2: not contiguous
    assert not strided.is_contiguous()
    assert_kernel_close(layer(strided), layer.reference(x))


def test_big_batch_picks_table_major_and_matches(isa):
    layer = make(64, 16, 8)
    x = safe_tokens(layer, 2100)  # >= 1024 tokens: the table-major loop, one tile
    assert_kernel_close(layer(x), layer.reference(x))


def test_nan_and_inf_inputs_do_not_crash(isa):
    layer = make(40, 8, 4)
    x = safe_tokens(layer, 5)
    x[1, 3] = float("nan")
    x[3, 0] = float("inf")
    y, ref = layer(x), layer.reference(x)
    assert y.shape == x.shape
    assert torch.isnan(y[1]).all() and torch.isnan(ref[1]).all()
    assert_kernel_close(y[[0, 2, 4]], ref[[0, 2, 4]])


def test_training_forward_equals_reference_formula():
    layer = make(70, 10, 7).train()
    x = safe_tokens(layer, 33)
    assert_kernel_close(layer(x), layer.reference(x))


def test_codes_are_msb_first_and_scores_follow_formula():
    z = torch.tensor([[0.5, -1.0, 2.0, -0.0, 3.0, 1e-3]])  # h = 2 tables of tau = 3
    codes, scores = codes_and_scores(z, 2, 3)
    assert codes.tolist() == [[0b101, 0b011]]
    a = z.abs().reshape(2, 3)
    expected = a.sum(-1) * torch.sigmoid(2 * a).prod(-1)
    assert_kernel_close(scores[0], expected)


def _plain_autograd_forward(layer: LookupFFN, x: torch.Tensor) -> torch.Tensor:
    """The training formula with PyTorch's own autograd only (indexing, no custom ops)."""
    z = layer.proj.reference(x) if layer.projection == "bh4" else layer.proj(x)
    codes, scores = codes_and_scores(z, layer.num_tables, layer.table_bits)
    idx = codes.long() + torch.arange(layer.num_tables) * 2**layer.table_bits  # (N, h)
    rows = layer.tables.reshape(-1, layer.d_model)[idx]  # (N, h, d)
    return (scores.unsqueeze(-1) * rows).sum(1) + layer.bias


@pytest.mark.parametrize("projection", ["bh4", "dense"])
def test_gradients_match_plain_autograd_float64(projection):
    layer = make(48, 6, 5, projection, 16).double().train()
    x = safe_tokens(layer.float(), 23).double().requires_grad_()
    layer.double()
    g = torch.randn(23, 48, dtype=torch.float64)
    y = layer(x)
    grads = torch.autograd.grad((y * g).sum(), [x, *layer.parameters()])
    y_ref = _plain_autograd_forward(layer, x)
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x, *layer.parameters()])
    assert_kernel_close(y, y_ref)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, got, want in zip(names, grads, grads_ref, strict=True):
        assert_kernel_close(got, want, what=f"grad {name}")  # float64: rtol 1e-9


# (group, tile, ahead) of the table-major gather (csrc/kernels/lookup_shape.cpp): the defaults
# for a small and a 2 MiB+ L2, and an odd one (a group that divides no table count here, small
# tiles, a prefetch distance longer than some tiles' last group)
TABLE_MAJOR_SHAPES = [(4, 8192, 4), (8, 4096, 0), (3, 1000, 7)]


def test_table_major_default_shape_follows_the_l2_size():
    big_l2 = ops.native().l2_cache_bytes() >= 2 << 20
    assert lookup_ops.table_major_shape() == TABLE_MAJOR_SHAPES[1 if big_l2 else 0]


def test_table_major_shape_rejects_bad_values_and_restores():
    before = lookup_ops.table_major_shape()
    with pytest.raises(ValueError, match=r"1 <= group <= 16, .* got \(17, 64, 0\)"):
        lookup_ops.use_table_major_shape(17, 64).__enter__()
    with pytest.raises(ValueError, match=r"got \(2, 0, 0\)"):
        lookup_ops.use_table_major_shape(2, 0).__enter__()
    with pytest.raises(ValueError, match=r"0 <= ahead <= 255 .* got \(2, 8, 256\)"):
        lookup_ops.use_table_major_shape(2, 8, 256).__enter__()
    native = ops.native()
    assert not native.lookup_table_major_shape_overridden()
    with lookup_ops.use_table_major_shape(5, 77, 3):
        assert lookup_ops.table_major_shape() == (5, 77, 3)
        with lookup_ops.use_table_major_shape(2, 9):  # nested: back to (5, 77, 3), an override
            assert lookup_ops.table_major_shape() == (2, 9, 0)
        assert lookup_ops.table_major_shape() == (5, 77, 3)
        assert native.lookup_table_major_shape_overridden()
    assert lookup_ops.table_major_shape() == before
    assert not native.lookup_table_major_shape_overridden()  # the default again, not a copy


@pytest.mark.parametrize(
    "shape", TABLE_MAJOR_SHAPES, ids=lambda s: "group{}-tile{}-ahead{}".format(*s)
)
@pytest.mark.parametrize(("threads", "tiles"), [(1, 1), (2, 1), (2, 2), (2, 4)])
def test_table_major_tiles_shared_by_threads(shape, threads, tiles):
    # one tile (2100 tokens: a short one), two or four (fewer than 4 per thread): the threads
    # split each tile's projection by token and its gather by column chunk (d = 130: 3
    # chunks, an uneven split), so both code buffers are reused; h = 9 tables: the last group
    # is short for every group size
    tile = shape[1]
    n = min(2100, tile) if tiles == 1 else (tiles - 1) * tile + 9 + tiles
    layer = make(130, 9, 3)
    x = safe_tokens(layer, n)
    expected = layer.reference(x)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for isa in testing.isa_levels():
            with testing.use_isa(isa), lookup_ops.use_table_major_shape(*shape):
                got = layer._native_forward(x, 2)
                assert_kernel_close(got, expected, what=f"{isa} threads={threads}")
                # the training gather's packed path shares its tiles the same way
                codes = torch.randint(0, 8, (n, 9), dtype=torch.int32)
                scores, tables = torch.rand(n, 9), layer.tables.detach()
                assert_kernel_close(
                    lookup_ops.gather_accumulate(scores, codes, tables),
                    lookup_ops.gather_reference(scores, codes, tables),
                    what=f"packed gather {isa} threads={threads}",
                )
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize(
    "shape",
    [pytest.param(s, marks=pytest.mark.slow) if s[1] > 1000 else s for s in TABLE_MAJOR_SHAPES],
    ids=lambda s: "group{}-tile{}-ahead{}".format(*s),
)
def test_table_major_whole_tiles_per_thread(shape):
    # >= 4 tiles per thread: each thread projects and gathers whole tiles of its own
    tile = shape[1]
    layer = make(24, 3, 4)
    n = 8 * tile + 301  # 9 tiles, the last one short
    x = safe_tokens(layer, n)
    expected = layer.reference(x)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for isa in testing.isa_levels():
            with testing.use_isa(isa), lookup_ops.use_table_major_shape(*shape):
                assert_kernel_close(layer(x), expected, what=f"{isa} own tiles")
                layer.set_table_dtype(torch.bfloat16)
                assert_kernel_close(layer(x), layer.reference(x), what=f"{isa} own tiles bf16")
                layer.set_table_dtype(torch.float32)
    finally:
        torch.set_num_threads(saved)


def test_sparse_table_gradient_equals_dense():
    dense = make(40, 8, 4).train()
    sparse = copy.deepcopy(dense)
    sparse.sparse_grad = True
    x = safe_tokens(dense, 50)
    g = torch.randn(50, 40)
    (dense(x) * g).sum().backward()
    (sparse(x) * g).sum().backward()
    assert sparse.tables.grad.is_sparse
    # the same per-table token order in both: bit-identical sums
    assert_exact(sparse.tables.grad.to_dense(), dense.tables.grad)
    torch.optim.SGD(sparse.parameters(), lr=0.1).step()  # optimizers accept the sparse grad


def test_backward_is_deterministic():
    layer = make(64, 16, 6).train()
    x = safe_tokens(layer, 300)
    g = torch.randn(300, 64)
    grads = []
    for _ in range(2):
        layer.zero_grad()
        (layer(x) * g).sum().backward()
        grads.append(layer.tables.grad.clone())
    assert_exact(grads[0], grads[1])


def test_eval_follows_in_place_weight_updates():
    layer = make(32, 4, 3).train()
    x = safe_tokens(layer, 10)
    layer.eval()
    before = layer(x)
    layer.train()
    (layer(x) ** 2).sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    layer.eval()
    x = safe_tokens(layer, 10, seed=1)
    after = layer(x)
    assert not torch.equal(before, after)
    assert_kernel_close(after, layer.reference(x))


def test_bfloat16_tables_match_their_reference_and_cost_little():
    layer = make(128, 16, 6)
    x = safe_tokens(layer, 40)
    exact = layer.reference(x)
    layer.set_table_dtype(torch.bfloat16)
    check_kernel(layer, x, "bf16")
    assert testing.sqnr_db(layer(x), exact) > 40.0  # bf16 keeps ~8 significant bits
    assert layer.cost().param_bytes < LookupFFN(128, 16, 6).cost().param_bytes
    layer.set_table_dtype(torch.float32)
    assert_kernel_close(layer(x), exact)


def test_cost_counts_projection_and_gather():
    layer = LookupFFN(512, 128, 8, "bh4", 64)
    c = layer.cost()
    assert isinstance(c, Cost)
    bh4 = 2 * 4 * (2 * 512 * 64 + 512 * 9)  # R = 2 repeats of 4 stages
    assert c.flops_per_token == bh4 + 2 * 128 * 512
    assert c.param_bytes == 4 * (128 * 256 * 512 + 2 * 4 * 8 * 64 * 64 + 1024 + 512)
    dense = LookupFFN(512, 128, 8, "dense").cost()
    assert dense.flops_per_token == 2 * 512 * 1024 + 2 * 128 * 512


def test_config_builds_with_capped_block_size():
    layer = LookupConfig(num_tables=8, table_bits=4, block_size=64).build(d_model=20)
    assert isinstance(layer, LookupFFN) and layer.block_size == 32


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"d_model": 0}, "d_model"),
        ({"d_model": 8, "num_tables": 0}, "num_tables"),
        ({"d_model": 8, "table_bits": 13}, r"table_bits must be in \[1, 12\], got 13"),
        ({"d_model": 8, "projection": "gaussian"}, "'bh4' or 'dense', got 'gaussian'"),
        ({"d_model": 8, "block_size": 16}, "dividing the padded width 8, got 16"),
        ({"d_model": 8, "block_size": 3}, "power of two"),
    ],
)
def test_bad_constructor_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        LookupFFN(**kwargs)


def test_native_wrappers_check_their_arguments():
    layer = make(16, 4, 3)
    plan = layer._plan()
    with pytest.raises(ValueError, match=r"expected x \(N, 16\), got shape \(3, 15\)"):
        lookup_ops.run_forward(plan, torch.randn(3, 15))
    with pytest.raises(TypeError, match=r"expected dtype torch\.float32, got torch\.float64"):
        lookup_ops.run_forward(plan, torch.randn(3, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="tables: expected shape"):
        lookup_ops.make_forward_plan(
            d_model=16, num_tables=4, table_bits=3, bh4=False, padded=0, repeats=0,
            block_size=0, wt=torch.zeros(16, 12), pbias=torch.zeros(12),
            tables=torch.zeros(4, 8, 16), bias=torch.zeros(16),
        )  # fmt: skip
    with pytest.raises(ValueError):  # the binding validates sizes too
        ops.native().lookup_forward(0, 1, 16, 4, 13, False, 0, 0, 0, 0, 0, 0, False, 0, 0, 0, 1)


def test_output_rows_not_64_byte_aligned(isa):
    # the table-major loop streams finished chunks into 64-byte-aligned y only; an output at an
    # odd float offset takes the plain stores (both loop orders, d on and off the 16 grid)
    for d in (128, 96, 130):
        layer = make(d, 12, 5)
        x = safe_tokens(layer, 70)
        plan = layer._plan()
        for order in (1, 2):
            buf = torch.full((70 * d + 1,), float("nan"))
            y = buf[1:].view(70, d)  # 4 bytes past an aligned address
            plan.run(x.data_ptr(), 70, y.data_ptr(), order, torch.get_num_threads())
            assert_kernel_close(y, layer.reference(x), what=f"d={d} order={order}")
            assert torch.isnan(buf[0])  # nothing written before y


@pytest.mark.parametrize("threads", [1, 2])
def test_single_token_every_loop_order(isa, threads):
    # batch 1: the one-token GEMM (B prefetched ahead), no OpenMP team at one thread
    layer = make(512, 128, 8)
    x = safe_tokens(layer, 3)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for i in range(3):
            xi = x[i : i + 1]
            for order in (1, 2):
                got = layer._native_forward(xi, order)
                assert_kernel_close(got, layer.reference(xi), what=f"token {i} order={order}")
            assert_kernel_close(layer(xi), layer.reference(xi))
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("table_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("d", "h", "tau"), [(100, 40, 7), (512, 128, 8), (33, 7, 12)])
def test_small_batches_pipelined_with_the_projection(isa, d, h, tau, table_dtype):
    # several BH4 repeats and few tokens: rows of the tables an early repeat completes are
    # fetched during the later repeats and summed first (tables straddling two repeats wait
    # for the second; d = 100 ends in a short column chunk that the second pass adds to)
    layer = make(d, h, tau)
    layer.set_table_dtype(table_dtype)
    assert layer.proj.repeats > 1
    x = safe_tokens(layer, 31)
    for n in (1, 2, 5, 31):
        got = layer._native_forward(x[:n].contiguous(), 1)
        assert_kernel_close(got, layer.reference(x[:n]), what=f"n={n}")


def test_nan_inputs_every_loop_order(isa):
    layer = make(64, 16, 6)
    x = safe_tokens(layer, 9)
    x[4, 5] = float("nan")
    ref = layer.reference(x)
    for order in (1, 2):
        y = layer._native_forward(x, order)
        assert torch.isnan(y[4]).all()
        keep = [i for i in range(9) if i != 4]
        assert_kernel_close(y[keep], ref[keep], what=f"order={order}")


def test_eval_fast_path_keeps_hooks_copies_and_pickles():
    layer = make(48, 8, 4)
    x = safe_tokens(layer, 6)
    expected = layer(x)  # builds the native plan
    seen = []
    handle = layer.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    assert_kernel_close(layer(x), expected)
    assert seen == [x.shape]  # a hook sends the call through nn.Module's dispatch
    handle.remove()
    clone = copy.deepcopy(layer)  # the plan (raw addresses) is not copied: re-packed on use
    assert clone._packed is None
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    del layer
    assert_kernel_close(clone(x), expected)
    assert_kernel_close(loaded(x), expected)
    with torch.no_grad():
        clone.tables.add_(1.0)  # an in-place update of the copy re-packs the copy only
    assert not torch.equal(clone(x), expected)
    assert_kernel_close(loaded(x), expected)


@pytest.mark.parametrize("projection", ["bh4", "dense"])
def test_eval_call_re_packs_after_each_kind_of_parameter_change(projection):
    # the native LookupEval watches each packed parameter's object, pointer and version
    kw = {"block_size": 8} if projection == "bh4" else {}
    layer = LookupFFN(32, num_tables=6, table_bits=3, projection=projection, **kw).eval()
    x = safe_tokens(layer, 5)
    assert_kernel_close(layer(x), layer.reference(x))
    proj = layer.proj.blocks if projection == "bh4" else layer.proj.weight
    with torch.no_grad():
        layer.bias.add_(0.5)  # in place: same pointer, new version
    assert_kernel_close(layer(x), layer.reference(x))
    with torch.no_grad():
        proj.data = proj.detach() * 0.5  # new storage under the same Parameter
    assert_kernel_close(layer(x), layer.reference(x))
    layer.tables = torch.nn.Parameter(layer.tables.detach().flip(1))  # a new Parameter object
    assert_kernel_close(layer(x), layer.reference(x))
    assert_kernel_close(layer(x.view(5, 1, 32)), layer.reference(x).view(5, 1, 32))  # 3-D
    assert_kernel_close(layer(x.t().contiguous().t()), layer.reference(x))  # non-contiguous
    assert layer(x[:0]).shape == (0, 32)
    layer.set_table_dtype(torch.bfloat16)  # re-packed as bfloat16
    assert_kernel_close(layer(x), layer.reference(x))
