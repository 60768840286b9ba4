"""The closed-form fits used by distill_: ridge backfitting of LookupFFN tables and FastFeedForward
output rows, FFF trees grown from a dense FFN's neurons, and sequential recording."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from liteffn.convert import distill as dist
from liteffn.convert.distill import (
    fit_fff_outputs_,
    fit_lookup_tables_,
    init_fff_from_dense_,
    ridge_backfit,
    ridge_solve,
)
from liteffn.layers.fff import FastFeedForward
from liteffn.layers.lookup import LookupFFN


def _rel(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred - y) ** 2).mean() / ((y - y.mean(0)) ** 2).mean())


def test_ridge_backfit_solves_a_grouped_sparse_system():
    g = torch.Generator().manual_seed(0)
    n, groups, rows_per, d = 3000, 3, 5, 4
    codes = torch.randint(0, rows_per, (n, groups), generator=g) + torch.arange(groups) * rows_per
    scores = torch.rand(n, groups, generator=g) + 0.5
    w_true = torch.randn(groups * rows_per, d, generator=g)
    y = 0.7 + sum(scores[:, k : k + 1] * w_true[codes[:, k]] for k in range(groups))
    w, b, mse = ridge_backfit(codes, scores, y, groups * rows_per, sweeps=150, ridge=1e-8)
    assert mse < 1e-8
    pred = b + sum(scores[:, k : k + 1] * w[codes[:, k]] for k in range(groups))
    torch.testing.assert_close(pred, y, atol=1e-3, rtol=0)
    w_exact, b_exact, mse_exact = ridge_solve(codes, scores, y, groups * rows_per, ridge=1e-8)
    assert mse_exact < 1e-8
    torch.testing.assert_close(w_exact, w, atol=1e-3, rtol=0)
    torch.testing.assert_close(b_exact, b, atol=1e-3, rtol=0)
    # with shrinkage both solve the same ridge problem
    wr, br, _ = ridge_backfit(codes, scores, y, groups * rows_per, sweeps=300, ridge=50.0)
    wr2, br2, _ = ridge_solve(codes, scores, y, groups * rows_per, ridge=50.0)
    torch.testing.assert_close(wr2, wr, atol=1e-3, rtol=0)
    torch.testing.assert_close(br2, br, atol=1e-3, rtol=0)
    # rows no token selects stay at the prior (zero), not at noise
    w2, _, _ = ridge_backfit(codes % rows_per, scores, y, groups * rows_per + 2, sweeps=2)
    assert float(w2[-2:].abs().max()) == 0.0


def test_lookup_least_squares_recovers_generating_tables():
    torch.manual_seed(0)
    teacher = LookupFFN(16, num_tables=4, table_bits=3, projection="dense")
    with torch.no_grad():
        teacher.bias.copy_(torch.randn(16))
    x = torch.randn(6000, 16)
    with torch.no_grad():
        y = teacher.train()(x)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.tables.normal_()  # forget the tables, keep the projection
        student.bias.zero_()
    before, after = fit_lookup_tables_(student, x, y, sweeps=40, ridge=1e-8)
    assert before > 0.5 and after < 1e-5
    with torch.no_grad():
        assert _rel(student.train()(x), y) < 1e-5


def test_fff_from_dense_is_exact_at_depth_zero_and_refit_helps_deeper():
    torch.manual_seed(0)
    d, f = 16, 48
    dense = nn.Sequential(nn.Linear(d, f), nn.GELU(), nn.Linear(f, d))
    x = torch.randn(3000, d)
    with torch.no_grad():
        y = dense(x)
    pruned = FastFeedForward(d, depth=0, trees=f, bias_out=True)  # every neuron, no routing
    assert init_fff_from_dense_(pruned, dense, x, y)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), y, atol=1e-4, rtol=1e-4)
    tree = FastFeedForward(d, depth=2, trees=4, bias_out=True)
    random_init = copy.deepcopy(tree)
    assert init_fff_from_dense_(tree, dense, x, y)
    with torch.no_grad():
        e_tree, e_random = _rel(tree.eval()(x), y), _rel(random_init.eval()(x), y)
    assert e_tree < 0.9 < e_random  # the neurons it keeps carry most of the output
    before, after = fit_fff_outputs_(tree, x, y, sweeps=4, ridge=1e-3)
    assert before == pytest.approx(e_tree, rel=1e-3) and after < 0.9 * before
    with torch.no_grad():
        assert _rel(tree.eval()(x), y) == pytest.approx(after, rel=1e-3)


def test_fff_from_dense_declines_what_it_cannot_copy():
    d = 8
    x = torch.randn(100, d)
    relu = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, d))  # not GELU
    with torch.no_grad():
        y = relu(x)
    assert not init_fff_from_dense_(FastFeedForward(d, depth=1, trees=2, bias_out=True), relu, x, y)
    gelu = nn.Sequential(nn.Linear(d, 16), nn.GELU(), nn.Linear(16, d))
    no_bias = FastFeedForward(d, depth=1, trees=2)
    assert not init_fff_from_dense_(no_bias, gelu, x, y)
    assert not init_fff_from_dense_(LookupFFN(d, 2, 2, projection="dense"), gelu, x, y)


def test_fff_output_refit_recovers_output_rows():
    torch.manual_seed(1)
    teacher = FastFeedForward(12, depth=2, trees=3, bias_out=True).eval()
    with torch.no_grad():
        teacher.b_out.normal_()
    x = torch.randn(4000, 12)
    with torch.no_grad():
        y = teacher(x)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.w_out.mul_(0.3).add_(0.1)
        student.b_out.zero_()
    before, after = fit_fff_outputs_(student, x, y, sweeps=40, ridge=1e-8)
    assert before > 0.05 and after < 1e-6
    assert F.mse_loss(student.eval()(x), y) < 1e-6


def test_sequential_fit_records_inputs_through_the_converted_layers(monkeypatch):
    pytest.importorskip("transformers")
    from _tiny import tiny_bert, tiny_inputs

    from liteffn.config import LookupConfig
    from liteffn.convert import convert_, distill_

    teacher = tiny_bert().eval()
    seen: dict[int, torch.Tensor] = {}
    real = dist._record_inputs

    def spy(model, entries, batches, stop_after):
        got = real(model, entries, batches, stop_after)
        for x in got.values():
            seen[len(seen)] = x.clone()
        return got

    monkeypatch.setattr(dist, "_record_inputs", spy)
    batches = [tiny_inputs("bert", batch=4, seq=9)]
    for sequential in (True, False):
        seen.clear()
        student = copy.deepcopy(teacher)
        convert_(student, LookupConfig(num_tables=4, table_bits=3, block_size=8))
        distill_(student, teacher, batches, layer_steps=2, progress=False, sequential=sequential)
        second = seen[1]  # layer 1's recorded inputs
        # layer 1's input in the teacher vs in the student with layer 0 converted
        blocks_t = [m for m in teacher.encoder.layer]
        want_t = real(teacher, {"l1": blocks_t[1].intermediate}, batches, None)["l1"]
        if sequential:
            assert not torch.allclose(second, want_t, atol=1e-4)
            want_s = real(student, {"l1": student.encoder.layer[1].intermediate}, batches, None)[
                "l1"
            ]
            torch.testing.assert_close(second, want_s, atol=1e-4, rtol=1e-4)
        else:
            torch.testing.assert_close(second, want_t)


def test_distill_fit_modes_on_a_tiny_bert():
    pytest.importorskip("transformers")
    from _tiny import tiny_bert, tiny_inputs

    from liteffn.config import FFFConfig, LUTConfig
    from liteffn.convert import convert_, distill_

    teacher = tiny_bert().eval()
    batches = [tiny_inputs("bert", batch=8, seq=16)]
    student = copy.deepcopy(teacher)
    convert_(student, FFFConfig(depth=1, trees=8, bias_out=True))
    rep = distill_(student, teacher, batches, fit="lstsq", progress=False)
    for r in rep["layers"].values():  # grown from the dense neurons, then solved: no Adam steps
        assert r["rel_mse_after"] <= r["rel_mse_before"] < 1.0
    lut = copy.deepcopy(teacher)
    convert_(lut, LUTConfig(hidden_luts=32))
    with pytest.raises(ValueError, match="no closed form for LUTFFN"):
        distill_(lut, teacher, batches, fit="lstsq", progress=False)
    with pytest.raises(ValueError, match="fit must be"):
        distill_(lut, teacher, batches, fit="sgd", progress=False)
