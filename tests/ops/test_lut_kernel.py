"""LUTFFN native kernel == reference, bit for bit, at every ISA level."""

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteffn import ops, testing
from liteffn.layers.lut import LUTFFN
from liteffn.ops.lut import lut_forward, lut_model
from liteffn.testing import assert_exact

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native module not built")


def tie_heavy(ffn: LUTFFN, shape, gen: torch.Generator) -> torch.Tensor:
    """Inputs on a coarse grid with thresholds on the same grid: many x == threshold ties,
    plus NaN and +-inf; tables with exact zeros (and -0.0) and NaN."""
    with torch.no_grad():
        ffn.thresholds.copy_(torch.randint(-3, 4, ffn.thresholds.shape, generator=gen) * 0.5)
        for layer in ffn.layers:
            t = layer.table
            t.copy_(torch.rand(t.shape, generator=gen) * 2 - 1)
            r = torch.rand(t.shape, generator=gen)
            t[r < 0.15] = 0.0
            t[(r >= 0.15) & (r < 0.2)] = -0.0
            t[(r >= 0.2) & (r < 0.22)] = float("nan")
    x = torch.randint(-4, 5, shape, generator=gen) * 0.5
    r = torch.rand(shape, generator=gen)
    x[r < 0.03] = float("nan")
    x[(r >= 0.03) & (r < 0.05)] = float("inf")
    x[(r >= 0.05) & (r < 0.07)] = float("-inf")
    return x.float()


def check(ffn: LUTFFN, x: torch.Tensor, what: str = "") -> None:
    ffn.eval()
    expected = ffn.reference(x)
    for level in testing.isa_levels():
        with testing.use_isa(level):
            assert_exact(ffn(x), expected, what=f"{what} isa={level}")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("hidden", [(), 48, (40, 24)])
def test_exact_across_batch_sizes(n, hidden):
    gen = torch.Generator().manual_seed(n)
    ffn = LUTFFN(7, bits_per_channel=5, hidden_luts=hidden, luts_per_output=3, lut_inputs=n)
    for batch in (0, 1, 5, 7, 8, 9, 63, 64, 65, 255, 256, 257, 300, 520):
        check(ffn, torch.randn(batch, 7), f"random n={n} batch={batch}")
    x = tie_heavy(ffn, (300, 7), gen)
    check(ffn, x, f"ties n={n}")
    check(ffn, x[:5], f"ties n={n} batch 5")


@pytest.mark.parametrize(
    ("d", "T", "n", "g", "hidden"),
    [
        (17, 3, 6, 16, (70, 50)),  # a partial 16-channel tile; g + 1 = 17 spans two registers
        (33, 1, 5, 31, (40,)),  # g + 1 = 32: the largest in-register affine lookup
        (5, 9, 4, 32, ()),  # g + 1 = 33: affine gather; T = 9 levels; no hidden layer
        (2, 17, 3, 255, (30, 20, 10)),  # 8 count planes (bytes); three hidden layers
        (2, 2, 2, 256, (9,)),  # 9 count planes: 16-token chunk masks instead of bytes
        (16, 8, 1, 1, (48,)),  # one-input LUTs, one LUT per channel
    ],
)
def test_exact_around_block_edges(d, T, n, g, hidden):
    """Token counts around the 256- and 512-token slices of the AVX-512 kernel (a block of at
    most 256 tokens uses 256-bit words, fewer than 8 go token by token), with group sizes,
    channel counts and levels at the edges of its lookup, count and thermometer tiles."""
    gen = torch.Generator().manual_seed(d * 1000 + g)
    ffn = LUTFFN(d, bits_per_channel=T, hidden_luts=hidden, luts_per_output=g, lut_inputs=n)
    with torch.no_grad():
        ffn.scale.normal_(generator=gen)
        ffn.shift.normal_(generator=gen)
    for batch in (8, 16, 255, 256, 257, 511, 512, 513, 519, 520, 768, 1031, 1032):
        check(ffn, torch.randn(batch, d, generator=gen) * 2, f"d={d} g={g} batch={batch}")
    x = tie_heavy(ffn, (1300, d), gen)
    check(ffn, x, f"ties d={d} g={g}")
    saved = torch.get_num_threads()
    try:  # two threads: a 512-token block and a 256-token block run side by side
        torch.set_num_threads(2)
        check(ffn, x[:700], f"ties d={d} g={g} 2 threads")
    finally:
        torch.set_num_threads(saved)


def test_benchmark_shape_exact(isa):
    ffn = LUTFFN(192, bits_per_channel=8, hidden_luts=3072, luts_per_output=16, lut_inputs=6)
    ffn.eval()
    gen = torch.Generator().manual_seed(3)
    for batch in (1, 37, 256, 300, 512, 1030):
        x = torch.randn(batch, 192, generator=gen)
        assert_exact(ffn(x), ffn.reference(x), what=f"{isa} batch {batch}")
    x = tie_heavy(ffn, (260, 192), gen)
    assert_exact(ffn(x), ffn.reference(x), what=f"{isa} ties")


def test_3d_non_contiguous_and_threads(isa):
    ffn = LUTFFN(6, bits_per_channel=4, hidden_luts=64, luts_per_output=8, lut_inputs=6).eval()
    x = torch.randn(3, 100, 6)
    y = ffn(x)
    assert y.shape == x.shape
    assert_exact(y, ffn.reference(x))
    xt = torch.randn(6, 333).t()  # (333, 6), non-contiguous
    assert_exact(ffn(xt), ffn.reference(xt.contiguous()))
    x3 = torch.randn(130, 4, 6).transpose(0, 1)  # (4, 130, 6), non-contiguous 3-D
    assert_exact(ffn(x3), ffn.reference(x3))
    saved = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            assert_exact(ffn(x), ffn.reference(x), what=f"threads={t}")
    finally:
        torch.set_num_threads(saved)


def test_large_group_count_and_wide_channels(isa):
    # g = 70 needs 7 count planes; T = 40 thermometer bits per channel.
    ffn = LUTFFN(3, bits_per_channel=40, hidden_luts=100, luts_per_output=70, lut_inputs=5)
    x = torch.randn(200, 3) * 2
    assert_exact(ffn.eval()(x), ffn.reference(x))


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 9),
    T=st.integers(1, 9),
    n=st.integers(1, 6),
    g=st.integers(1, 20),
    hidden=st.lists(st.integers(1, 80), max_size=2),
    batch=st.integers(0, 300),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_exact_property(d, T, n, g, hidden, batch, seed, ties):
    torch.manual_seed(seed)
    ffn = LUTFFN(d, bits_per_channel=T, hidden_luts=hidden, luts_per_output=g, lut_inputs=n)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ffn.scale.normal_(generator=gen)
        ffn.shift.normal_(generator=gen)
    x = tie_heavy(ffn, (batch, d), gen) if ties else torch.randn(batch, d, generator=gen) * 3
    check(ffn, x)


def test_repacks_after_parameter_changes(isa):
    ffn = LUTFFN(4, bits_per_channel=3, hidden_luts=32, luts_per_output=4, lut_inputs=4)
    opt = torch.optim.Adam(ffn.param_groups(0.05))
    x = torch.randn(80, 4)
    for _ in range(3):
        ffn.train()
        loss = ffn(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ffn.eval()
        assert_exact(ffn(x), ffn.reference(x))
    with torch.no_grad():
        ffn.layers[1].table.neg_()
        ffn.thresholds.add_(0.3)
    assert_exact(ffn(x), ffn.reference(x))
    ffn.layers[0].mapping.copy_(ffn.layers[0].mapping.flip(0))
    assert_exact(ffn(x), ffn.reference(x))
    # the native LutEval watches each packed tensor's object, pointer and version
    with torch.no_grad():
        ffn.shift.add_(0.25)  # in place: same pointer, new version
    assert_exact(ffn(x), ffn.reference(x))
    ffn.scale.data = ffn.scale.detach() * -2  # new storage under the same Parameter
    assert_exact(ffn(x), ffn.reference(x))
    table = ffn.layers[0].table.detach().clone()
    ffn.layers[0].table = torch.nn.Parameter(-table)  # a new Parameter object
    assert_exact(ffn(x), ffn.reference(x))
    ffn.layers[1].mapping = ffn.layers[1].mapping.flip(0).contiguous()  # a new buffer object
    assert_exact(ffn(x), ffn.reference(x))
    assert type(ffn._eval_call).__name__ == "LutEval" and ffn._eval_call.current()


def test_learnable_mapping_network_is_exact(isa):
    ffn = LUTFFN(
        5,
        bits_per_channel=4,
        hidden_luts=30,
        luts_per_output=4,
        lut_inputs=3,
        first_mapping="learnable",
    )
    x = torch.randn(90, 5)
    with torch.no_grad():
        ffn.layers[0].mapping_weight.normal_()  # the argmax moves: mapping follows
    ffn.eval()
    assert_exact(ffn(x), ffn.reference(x))


def test_packed_table_words():
    ffn = LUTFFN(2, bits_per_channel=2, hidden_luts=(), luts_per_output=3, lut_inputs=6)
    words = ffn.native_model().table_words(0)
    table = ffn.layers[0].table.detach()
    for j, w in enumerate(words):
        assert [(w >> a) & 1 for a in range(64)] == (table[j] > 0).long().tolist()


def test_copy_and_state_dict_round_trip():
    ffn = LUTFFN(4, bits_per_channel=3, hidden_luts=16, luts_per_output=2, lut_inputs=3).eval()
    x = torch.randn(20, 4)
    y = ffn(x)
    assert_exact(copy.deepcopy(ffn)(x), y)
    buf = io.BytesIO()
    torch.save(ffn.state_dict(), buf)
    other = LUTFFN(4, bits_per_channel=3, hidden_luts=16, luts_per_output=2, lut_inputs=3).eval()
    other(x)  # packs its own random parameters first
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert_exact(other(x), y)


def _parts(d=3, T=2, n=2, g=2, hidden=4):
    thr = torch.zeros(d, T)
    aff = torch.zeros(d, g + 1)
    maps = [torch.zeros(hidden, n, dtype=torch.int64), torch.zeros(d * g, n, dtype=torch.int64)]
    tabs = [torch.zeros(hidden, 2**n), torch.zeros(d * g, 2**n)]
    return thr, aff, maps, tabs


def test_lut_model_checks_name_expected_and_got():
    thr, aff, maps, tabs = _parts()
    lut_model(thr, aff, maps, tabs)  # valid
    with pytest.raises(ValueError, match=r"indices in \[0, 6\), got \[0, 6\]"):
        bad = maps[0].clone()
        bad[1, 1] = 6
        lut_model(thr, aff, [bad, maps[1]], tabs)
    with pytest.raises(ValueError, match=r"indices in \[0, 4\), got \[-1, 0\]"):
        bad = maps[1].clone()
        bad[0, 0] = -1
        lut_model(thr, aff, [maps[0], bad], tabs)
    with pytest.raises(TypeError, match=r"expected dtype torch.int64, got torch.int32"):
        lut_model(thr, aff, [maps[0].int(), maps[1]], tabs)
    with pytest.raises(ValueError, match=r"expected shape \(4, 4\), got \(4, 8\)"):
        lut_model(thr, aff, maps, [torch.zeros(4, 8), tabs[1]])
    with pytest.raises(ValueError, match="d\\*g = 6 LUTs, got 4"):
        lut_model(thr, aff, maps[:1], tabs[:1])
    with pytest.raises(TypeError, match=r"float32, got torch.float64"):
        lut_model(thr.double(), aff, maps, tabs)
    model = lut_model(thr, aff, maps, tabs)
    with pytest.raises(ValueError, match=r"expected shape \(N, 3\), got \(2, 4\)"):
        lut_forward(model, torch.zeros(2, 4), 3)
    with pytest.raises(ValueError, match="contiguous"):
        lut_forward(model, torch.zeros(3, 2).t(), 3)


def test_eval_path_edge_cases(isa):
    ffn = LUTFFN(6, bits_per_channel=3, hidden_luts=20, luts_per_output=2, lut_inputs=4).eval()
    x1 = torch.randn(6)  # a single token without a batch dimension
    assert_exact(ffn(x1), ffn.reference(x1))
    assert ffn(torch.randn(2, 0, 6)).shape == (2, 0, 6)
    xg = torch.randn(5, 6, requires_grad=True)
    assert_exact(ffn(xg).detach(), ffn.reference(xg.detach()))  # grad-enabled: reference path
    with pytest.raises(ValueError, match="d_model=6"):
        ffn(torch.randn(2, 5))
    with pytest.raises(ValueError, match="0-d"):
        ffn(torch.tensor(1.0))
    x64 = torch.randn(4, 6, dtype=torch.float64)
    assert_exact(ffn(x64), ffn.reference(x64))
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x = torch.randn(4, 6, dtype=torch.float32)
        assert_exact(ffn(x), ffn.reference(x))
    finally:
        torch.set_default_dtype(saved)
    ffn64 = copy.deepcopy(ffn).double()  # float64 parameters: the reference path
    assert_exact(ffn64(x64), ffn64.reference(x64))
