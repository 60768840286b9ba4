"""The FFF kernel against its PyTorch reference, at every ISA level.

Routing compares ``a > 0`` and the kernel sums dot products in a different order from PyTorch,
so an ``a`` within rounding of 0 could legitimately route differently. Exactness tests therefore
draw ``x``, ``w_in`` and ``b_in`` from a small dyadic grid (multiples of 1/8 in [-1, 1]): every
product and partial sum is exact in float32, so ``a`` -- and the path -- are identical in any
order, and exact ties ``a == 0`` occur often (they must go left). Random-normal inputs are
tested separately, on tokens whose float64 ``a`` values are clear of 0.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteffn import ops, testing
from liteffn.ops.fff import fff_native, fff_paths, fff_reference
from liteffn.testing import assert_exact, assert_kernel_close


def grid(*shape: int, gen: torch.Generator | None = None) -> torch.Tensor:
    return torch.randint(-8, 9, shape, generator=gen).float() / 8


def make(d: int, depth: int, trees: int, bias_out: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = trees * (2 ** (depth + 1) - 1)
    w_in, b_in = grid(rows, d, gen=g), grid(rows, gen=g)
    w_out = torch.randn(rows, d, generator=g)
    b_out = torch.randn(d, generator=g) if bias_out else None
    return w_in, b_in, w_out, b_out


def run_native(x, w_in, b_in, w_out, depth, trees, b_out=None):
    k = trees * (depth + 1)
    path = torch.empty(x.shape[0], k, dtype=torch.int32)
    act = torch.empty(x.shape[0], k)
    y = fff_native(x, w_in, b_in, w_out, depth, trees, b_out, path=path, act=act)
    return y, path, act


@pytest.mark.parametrize("trees", [1, 2, 3, 4])
@pytest.mark.parametrize("depth", [0, 1, 5, 11])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_native_matches_reference(isa, trees, depth, n):
    d = 40
    w_in, b_in, w_out, b_out = make(d, depth, trees, bias_out=trees == 2)
    x = grid(n, d)
    y, path, act = run_native(x, w_in, b_in, w_out, depth, trees, b_out)
    idx, a_ref = fff_paths(x, w_in, b_in, depth, trees)
    assert_exact(path.long(), idx, what="path")
    assert_exact(act, a_ref, what="a")
    assert_kernel_close(y, fff_reference(x, w_in, b_in, w_out, depth, trees, b_out), what=isa)


@pytest.mark.parametrize("depth", [12, 16])
def test_deep_trees(isa, depth):
    d = 8
    w_in, b_in, w_out, _ = make(d, depth, 1)
    x = grid(33, d)
    y, path, _ = run_native(x, w_in, b_in, w_out, depth, 1)
    assert_exact(path.long(), fff_paths(x, w_in, b_in, depth, 1)[0])
    assert_kernel_close(y, fff_reference(x, w_in, b_in, w_out, depth, 1))


@pytest.mark.parametrize(("depth", "n"), [(0, 100), (16, 100), (16, 16384)])
def test_bucketed_schedule_at_the_depth_extremes(isa, depth, n):
    # >= 64 tokens take the bucketed schedule, split at level min(levels // 2, log2(n / 32)):
    # depth 0 (one level, split 0), depth 16 at 100 tokens (split 1) and 16384 (split 8)
    d, trees = 8, 2
    w_in, b_in, w_out, b_out = make(d, depth, trees, bias_out=True)
    x = grid(n, d)
    y, path, _ = run_native(x, w_in, b_in, w_out, depth, trees, b_out)
    assert_exact(path.long(), fff_paths(x, w_in, b_in, depth, trees)[0])
    assert_kernel_close(y, fff_reference(x, w_in, b_in, w_out, depth, trees, b_out), what=isa)


# (d, depth, trees) for each large-batch schedule: several trees whose rows fit in L2 take the
# forest schedule (trees walked kForestGroup at a time, odd counts leave a partial group); one
# tree, or trees too big for L2, take the bucketed (node-sorted) one. d is not a multiple of 8
# or 16, so the column tails run too.
SCHEDULES = {
    "forest-2": (37, 6, 2),
    "forest-7": (100, 4, 7),
    "bucketed-1": (37, 6, 1),
    "bucketed-2": (300, 7, 2),  # 2 * 255 rows * 300 * 4 B = 612 KB per tree: too big for forest
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_large_batch_schedules(isa, schedule):
    d, depth, trees = SCHEDULES[schedule]
    w_in, b_in, w_out, b_out = make(d, depth, trees, bias_out=True)
    x = grid(1500, d)
    saved = torch.get_num_threads()
    try:
        for nthreads in (1, 2):
            torch.set_num_threads(nthreads)
            y, path, act = run_native(x, w_in, b_in, w_out, depth, trees, b_out)
            idx, a_ref = fff_paths(x, w_in, b_in, depth, trees)
            assert_exact(path.long(), idx)
            assert_exact(act, a_ref)  # grid inputs: exact in any summation order
            assert_kernel_close(y, fff_reference(x, w_in, b_in, w_out, depth, trees, b_out))
    finally:
        torch.set_num_threads(saved)


# The bucketed schedule (kernels/fff_bucketed.h) runs for batches of >= 64 tokens unless the
# forest takes them; it works in blocks of 65536 tokens.
BUCKETED_MIN, BLOCK = 64, 65536


def takes_forest(d: int, depth: int, trees: int) -> bool:
    return trees >= 2 and 2 * (2 ** (depth + 1) - 1) * d * 4 <= 256 << 10


def run_threads(x, w_in, b_in, w_out, depth, trees, b_out=None):
    """run_native at 1 and 2 threads; the two must agree bit for bit."""
    saved = torch.get_num_threads()
    try:
        runs = []
        for nthreads in (1, 2):
            torch.set_num_threads(nthreads)
            runs.append(run_native(x, w_in, b_in, w_out, depth, trees, b_out))
    finally:
        torch.set_num_threads(saved)
    for one, two in zip(runs[0], runs[1], strict=True):  # NaN inputs give NaN rows: equal_nan
        torch.testing.assert_close(one, two, rtol=0, atol=0, equal_nan=True)
    return runs[0]


def check_bucketed(x, w_in, b_in, w_out, depth, trees, b_out=None, what=""):
    y, path, act = run_threads(x, w_in, b_in, w_out, depth, trees, b_out)
    idx, a_ref = fff_paths(x, w_in, b_in, depth, trees)
    assert_exact(path.long(), idx, what=f"path {what}")
    assert_exact(act, a_ref, what=f"a {what}")
    assert_kernel_close(y, fff_reference(x, w_in, b_in, w_out, depth, trees, b_out), what=what)


@pytest.mark.parametrize("n", [BUCKETED_MIN - 1, BUCKETED_MIN, BUCKETED_MIN + 1, 203, 1000])
def test_bucketed_threshold(isa, n):
    # d = 67: every column tail of the gathers runs (AVX-512 64 + 3 lanes, AVX2 48 + 8 + 8 + 3)
    d, depth = 67, 7
    w_in, b_in, w_out, b_out = make(d, depth, 1, bias_out=True)
    check_bucketed(grid(n, d), w_in, b_in, w_out, depth, 1, b_out, what=f"{isa} n={n}")


# several shallow trees (depth <= 2) take the forest schedule at any sensible d
BUCKETED_TREES = [
    (t, depth) for t in (1, 2, 3, 4) for depth in (0, 1, 2, 6, 11, 16) if t == 1 or depth > 2
]


@pytest.mark.parametrize(("trees", "depth"), BUCKETED_TREES)
def test_bucketed_trees_and_depths(isa, trees, depth):
    d = 8 if depth > 11 else 48
    if takes_forest(d, depth, trees):
        d = (256 << 10) // (8 * (2 ** (depth + 1) - 1)) + 1  # just too big for the forest
    w_in, b_in, w_out, b_out = make(d, depth, trees, bias_out=trees == 3, seed=depth)
    x = grid(300, d, gen=torch.Generator().manual_seed(trees))
    check_bucketed(x, w_in, b_in, w_out, depth, trees, b_out, what=f"{isa} d={d}")


def test_bucketed_several_blocks(isa):
    # two full blocks and a partial one; few distinct tokens, so many share whole paths
    d, depth, trees = 16, 5, 1
    w_in, b_in, w_out, b_out = make(d, depth, trees, bias_out=True)
    gen = torch.Generator().manual_seed(3)
    distinct = grid(500, d, gen=gen)
    x = distinct[torch.randint(0, 500, (2 * BLOCK + 77,), generator=gen)]
    check_bucketed(x, w_in, b_in, w_out, depth, trees, b_out, what=isa)


def test_bucketed_shared_and_distinct_rows(isa):
    # neighbours in leaf order share all, some or none of their rows: copies of a few tokens
    # mixed with distinct ones
    d, depth = 40, 9
    w_in, b_in, w_out, _ = make(d, depth, 1)
    gen = torch.Generator().manual_seed(4)
    x = torch.cat([grid(7, d, gen=gen).repeat(30, 1), grid(150, d, gen=gen)])
    x = x[torch.randperm(x.shape[0], generator=gen)]
    check_bucketed(x, w_in, b_in, w_out, depth, 1, what=isa)


def test_bucketed_nan_goes_left_and_stays_in_its_row(isa):
    check_nan_goes_left(run_threads, 200, 11, 1, nan_row=17, inf_row=101)


def test_exact_ties_go_left(isa):
    # Zero routing weights and biases: every a is exactly 0, so every token takes the left spine.
    d, depth, trees = 16, 4, 3
    _, _, w_out, _ = make(d, depth, trees)
    w_in, b_in = torch.zeros(w_out.shape), torch.zeros(w_out.shape[0])
    for n in (1, 5, 600):
        y, path, act = run_native(torch.randn(n, d), w_in, b_in, w_out, depth, trees)
        nodes = 2 ** (depth + 1) - 1
        spine = torch.tensor([t * nodes + 2**level - 1 for t in range(trees) for level in range(5)])
        assert_exact(path.long(), spine.expand(n, -1).contiguous())
        assert_exact(act, torch.zeros(n, trees * (depth + 1)))
        assert_exact(y, torch.zeros(n, d))  # gelu(0) = 0


def test_random_normal_inputs_clear_of_ties(isa):
    d, depth, trees = 96, 9, 2
    gen = torch.Generator().manual_seed(1)
    rows = trees * (2 ** (depth + 1) - 1)
    w_in, b_in = torch.randn(rows, d, generator=gen) / d**0.5, torch.randn(rows, generator=gen)
    w_out = torch.randn(rows, d, generator=gen)
    x = torch.randn(400, d, generator=gen)
    idx, _ = fff_paths(x, w_in, b_in, depth, trees)
    # float64 a along the reference path; keep tokens whose every decision is clear of 0
    a64 = (x.double().unsqueeze(1) * w_in.double()[idx]).sum(-1) + b_in.double()[idx]
    clear = (a64.abs() > 1e-3).all(1)
    assert clear.sum() > 300
    y, path, _ = run_native(x, w_in, b_in, w_out, depth, trees)
    assert_exact(path.long()[clear], idx[clear])
    ref = fff_reference(x, w_in, b_in, w_out, depth, trees)
    assert_kernel_close(y[clear], ref[clear])


def check_nan_goes_left(run, n, depth, trees, nan_row, inf_row, d=24):
    """A NaN in x[nan_row] sends that token down every tree's left spine (NaN > 0 is false) and
    makes its y NaN; x[inf_row] holds an inf; every other token still equals the reference."""
    w_in, b_in, w_out, _ = make(d, depth, trees)
    x = grid(n, d)
    x[nan_row, 3] = float("nan")
    x[inf_row, 0] = float("inf")
    y, path, _ = run(x, w_in, b_in, w_out, depth, trees)
    nodes = 2 ** (depth + 1) - 1
    spine = torch.tensor([t * nodes + 2**lv - 1 for t in range(trees) for lv in range(depth + 1)])
    assert_exact(path[nan_row].long(), spine)
    assert torch.isnan(y[nan_row]).all()
    ok = torch.tensor([i not in (nan_row, inf_row) for i in range(n)])
    assert_kernel_close(y[ok], fff_reference(x[ok], w_in, b_in, w_out, depth, trees))


def test_nan_goes_left_and_stays_in_its_row(isa):
    check_nan_goes_left(run_native, 9, 7, 2, nan_row=4, inf_row=6)


def test_empty_batch():
    w_in, b_in, w_out, _ = make(8, 2, 1)
    assert fff_native(torch.empty(0, 8), w_in, b_in, w_out, 2, 1).shape == (0, 8)


@settings(max_examples=30, deadline=None)
@given(
    d=st.integers(1, 70),
    depth=st.integers(0, 9),
    trees=st.integers(1, 4),
    n=st.integers(0, 40),
    bias_out=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_native_matches_reference_property(d, depth, trees, n, bias_out, seed):
    w_in, b_in, w_out, b_out = make(d, depth, trees, bias_out, seed)
    x = grid(n, d, gen=torch.Generator().manual_seed(seed + 1))
    expected = fff_reference(x, w_in, b_in, w_out, depth, trees, b_out)
    idx, _ = fff_paths(x, w_in, b_in, depth, trees)
    for level in testing.isa_levels():
        with ops.use_isa(level):
            y, path, _ = run_native(x, w_in, b_in, w_out, depth, trees, b_out)
            assert_exact(path.long(), idx, what=level)
            assert_kernel_close(y, expected, what=level)


def test_native_rejects_bad_arguments():
    w_in, b_in, w_out, _ = make(8, 2, 1)
    x = grid(3, 8)
    with pytest.raises(ValueError, match=r"trees\*nodes=15.*got shape \(7, 8\)"):
        fff_native(x, w_in, b_in, w_out, 3, 1)
    with pytest.raises(TypeError, match="float32"):
        fff_native(x.double(), w_in, b_in, w_out, 2, 1)
    with pytest.raises(ValueError, match="contiguous"):
        fff_native(grid(8, 3).t(), w_in, b_in, w_out, 2, 1)
    with pytest.raises(ValueError, match=r"expected shape \(7, 8\), got \(7, 9\)"):
        fff_native(x, w_in, b_in, grid(7, 9), 2, 1)
    with pytest.raises(ValueError, match=r"b_out: expected shape \(8,\)"):
        fff_native(x, w_in, b_in, w_out, 2, 1, torch.zeros(9))
    with pytest.raises(ValueError, match="both path and act"):
        fff_native(x, w_in, b_in, w_out, 2, 1, path=torch.zeros(3, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="int32"):
        fff_native(x, w_in, b_in, w_out, 2, 1, path=torch.zeros(3, 3), act=torch.zeros(3, 3))


def test_advise_weights_keeps_contents():
    # huge-page advice for the eval weights: in place, contents unchanged, tiny buffers refused
    w = torch.randn(3 << 20)  # 12 MiB: at least one aligned 2 MiB page inside
    before = w.clone()
    assert isinstance(ops.native().fff_advise_weights(w.data_ptr(), w.numel() * 4), bool)
    assert torch.equal(w, before)
    assert ops.native().fff_advise_weights(0, 1 << 30) is False
    small = torch.randn(100)
    assert ops.native().fff_advise_weights(small.data_ptr(), 400) is False


# -- leaf form (original FFF) ------------------------------------------------------------------


def leaf_layer(d, depth, trees, width, bias_out=False, seed=0):
    """A leaf-form layer with dyadic routing and leaf-input weights (exact dots in any order)."""
    from liteffn import FastFeedForward

    torch.manual_seed(seed)
    ffn = FastFeedForward(d, depth=depth, trees=trees, leaf_width=width, bias_out=bias_out)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (ffn.w_in, ffn.b_in, ffn.leaf_w1, ffn.leaf_b1):
            p.copy_(grid(*p.shape, gen=g))
        if bias_out:
            ffn.b_out.normal_()
    return ffn.eval()


def leaf_native(ffn, x):
    from liteffn.ops.fff import fff_leaf_native

    return fff_leaf_native(
        x, ffn.w_in.detach(), ffn.b_in.detach(), ffn.leaf_w1.detach(), ffn.leaf_b1.detach(),
        ffn.leaf_w2.detach(), ffn.leaf_b2.detach(), ffn.depth, ffn.trees,
        None if ffn.b_out is None else ffn.b_out.detach(),
    )  # fmt: skip


@pytest.mark.parametrize(("depth", "trees", "width"), [(0, 1, 1), (1, 2, 5), (4, 3, 8), (6, 1, 9)])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_leaf_native_matches_reference(isa, depth, trees, width, n):
    ffn = leaf_layer(24, depth, trees, width, bias_out=trees == 2)
    x = grid(n, 24)
    expected = ffn.reference(x)
    assert_kernel_close(leaf_native(ffn, x), expected, what=isa)
    assert_kernel_close(ffn(x), expected, what=isa)  # the layer's eval path takes the kernel


def test_leaf_native_two_threads_and_empty_batch(isa):
    ffn = leaf_layer(13, 3, 2, 4, bias_out=True)
    x = grid(257, 13)
    saved = torch.get_num_threads()
    try:
        for nthreads in (1, 2):
            torch.set_num_threads(nthreads)
            assert_kernel_close(leaf_native(ffn, x), ffn.reference(x))
    finally:
        torch.set_num_threads(saved)
    assert leaf_native(ffn, torch.empty(0, 13)).shape == (0, 13)


def test_leaf_native_ties_go_left_and_nan_stays_in_bounds(isa):
    ffn = leaf_layer(6, 3, 2, 3)
    with torch.no_grad():
        ffn.w_in.zero_()
        ffn.b_in.zero_()  # every a == 0: every token goes to each tree's leftmost leaf
    x = grid(5, 6)
    assert_kernel_close(leaf_native(ffn, x), ffn.reference(x))
    x[2, 1] = float("nan")  # NaN routes left; its leaf output is NaN, the others are unaffected
    y = leaf_native(ffn, x)
    ok = torch.tensor([True, True, False, True, True])
    assert_kernel_close(y[ok], ffn.reference(x[ok]))


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 40),
    depth=st.integers(0, 6),
    trees=st.integers(1, 3),
    width=st.integers(1, 10),
    n=st.integers(0, 20),
    seed=st.integers(0, 2**16),
)
def test_leaf_native_matches_reference_property(d, depth, trees, width, n, seed):
    ffn = leaf_layer(d, depth, trees, width, bias_out=seed % 2 == 0, seed=seed)
    x = grid(n, d, gen=torch.Generator().manual_seed(seed + 1))
    expected = ffn.reference(x)
    for level in testing.isa_levels():
        with ops.use_isa(level):
            assert_kernel_close(leaf_native(ffn, x), expected, what=level)


def test_leaf_native_rejects_bad_arguments():
    from liteffn.ops.fff import fff_leaf_native

    ffn = leaf_layer(8, 2, 1, 3)
    args = [p.detach() for p in (ffn.w_in, ffn.b_in, ffn.leaf_w1, ffn.leaf_b1, ffn.leaf_w2)]
    b2 = ffn.leaf_b2.detach()
    x = grid(3, 8)
    with pytest.raises(ValueError, match=r"leaf_b2: expected shape \(4, 8\), got \(3, 8\)"):
        fff_leaf_native(x, *args, b2[:3], 2, 1)
    with pytest.raises(ValueError, match=r"w_in: expected shape \(7, 8\), got \(3, 8\)"):
        fff_leaf_native(x, *args, b2, 3, 1)
    with pytest.raises(TypeError, match="float32"):
        fff_leaf_native(x.double(), *args, b2, 2, 1)
    with pytest.raises(ValueError, match=r"1 <= trees <= 64, got depth=2, trees=65"):
        fff_leaf_native(x, *args, b2, 2, 65)


def test_simd_gelu_accuracy(isa):
    # Two depth-0 trees, d = 1: tree 0 is the identity neuron (y = gelu(x)), tree 1 adds
    # gelu(-100) = 0; two trees take the forest schedule, whose GELU is the SIMD one (erf by
    # Abramowitz & Stegun 7.1.26, kernels/gelu.h) at avx2/avx512 and libm's at scalar.
    x = torch.linspace(-12, 12, 100_001)
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-30, -1e-30, float("nan")])])[:, None]
    w_in, b_in, w_out = torch.tensor([[1.0], [0.0]]), torch.tensor([0.0, -100.0]), torch.ones(2, 1)
    y = fff_native(x.contiguous(), w_in, b_in, w_out, 0, 2)[:, 0].double()
    xd = x[:, 0].double()
    exact = 0.5 * xd * (1 + torch.erf(xd / 2**0.5))
    assert torch.isnan(y[-1])
    err = (y - exact)[:-1].abs()
    assert (err <= 3e-7 * xd[:-1].abs() + 1e-30).all(), float((err / xd[:-1].abs()).max())
