"""The LookupFFN gather-accumulate op: native forward/backward vs plain PyTorch autograd."""

from __future__ import annotations

import pytest
import torch

from liteffn import ops, testing
from liteffn.ops import lookup as lookup_ops
from liteffn.ops.fwht import fwht_reference
from liteffn.testing import assert_exact, assert_kernel_close


def _inputs(n, h, tau, d, dtype=torch.float32):
    codes = torch.randint(0, 2**tau, (n, h), dtype=torch.int32)
    scores = torch.rand(n, h, dtype=dtype) + 0.1
    tables = torch.randn(h, 2**tau, d, dtype=dtype)
    return scores, codes, tables


@pytest.mark.parametrize(("n", "h", "tau", "d"), [(0, 3, 2, 5), (1, 1, 1, 1), (37, 9, 5, 70)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gather_matches_reference(isa, n, h, tau, d, dtype):
    scores, codes, tables = _inputs(n, h, tau, d, dtype)
    got = lookup_ops.gather_accumulate(scores, codes, tables)
    assert_kernel_close(got, lookup_ops.gather_reference(scores, codes, tables), what=isa)


@pytest.mark.parametrize("sparse", [False, True])
def test_gather_gradients_match_autograd_float64(isa, sparse):
    scores, codes, tables = _inputs(41, 6, 4, 19, torch.float64)
    g = torch.randn(41, 19, dtype=torch.float64)
    s1, t1 = scores.clone().requires_grad_(), tables.clone().requires_grad_()
    (lookup_ops.gather_accumulate(s1, codes, t1, sparse=sparse) * g).sum().backward()
    s2, t2 = scores.clone().requires_grad_(), tables.clone().requires_grad_()
    (lookup_ops.gather_reference(s2, codes, t2) * g).sum().backward()
    assert_kernel_close(s1.grad, s2.grad, what="scores")
    grad_t = t1.grad.to_dense() if sparse else t1.grad
    assert t1.grad.is_sparse == sparse
    assert_kernel_close(grad_t, t2.grad, what="tables")


@pytest.mark.parametrize("d", [1, 15, 16, 17, 64, 100, 131])
def test_float32_kernels_match_float64_reference(isa, d):
    # the float32 forward gather, score dots and row scatter-add (16-lane AVX-512 loops with
    # masked column tails) against float64 autograd on the same inputs
    scores, codes, tables = _inputs(29, 7, 3, d)
    g = torch.randn(29, d)
    s1, t1 = scores.clone().requires_grad_(), tables.clone().requires_grad_()
    (lookup_ops.gather_accumulate(s1, codes, t1) * g).sum().backward()
    s2, t2 = scores.double().requires_grad_(), tables.double().requires_grad_()
    y2 = lookup_ops.gather_reference(s2, codes, t2)
    (y2 * g.double()).sum().backward()
    assert_kernel_close(lookup_ops.gather_accumulate(scores, codes, tables), y2.float(), what=isa)
    assert_kernel_close(s1.grad, s2.grad.float(), what=f"{isa} scores")
    assert_kernel_close(t1.grad, t2.grad.float(), what=f"{isa} tables")


def test_gradcheck():
    scores, codes, tables = _inputs(5, 3, 2, 4, torch.float64)
    scores.requires_grad_()
    tables.requires_grad_()
    fn = lambda s, t: lookup_ops.gather_accumulate(s, codes, t)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (scores, tables))


def test_isa_levels_agree_float32():
    if not ops.native_available():
        pytest.skip("native module not built")
    scores, codes, tables = _inputs(64, 8, 6, 100)
    g = torch.randn(64, 100)
    results = []
    for isa in testing.isa_levels():
        with testing.use_isa(isa):
            s, t = scores.clone().requires_grad_(), tables.clone().requires_grad_()
            y = lookup_ops.gather_accumulate(s, codes, t)
            (y * g).sum().backward()
            results.append((y, s.grad, t.grad))
    for y, gs, gt in results[1:]:
        assert_kernel_close(y, results[0][0])
        assert_kernel_close(gs, results[0][1])
        assert_kernel_close(gt, results[0][2])


def test_gather_rejects_bad_arguments():
    scores, codes, tables = _inputs(4, 3, 2, 5)
    if not ops.native_available():
        pytest.skip("native module not built")
    with pytest.raises(ValueError, match=r"codes: expected shape \(4, 3\), got \(4, 2\)"):
        lookup_ops.gather_accumulate(scores, codes[:, :2], tables)
    with pytest.raises(ValueError, match=r"tables \(h, 2\^tau, d\), got shape \(3, 4\)"):
        lookup_ops.gather_accumulate(scores, codes, tables[:, :, 0])
    bad = codes.clone()
    # one past the last row: the kernels would read out of bounds
    bad[0, 0], bad[2, 1] = 0, tables.shape[1]
    with pytest.raises(ValueError, match=r"codes in \[0, 4\), got values in \[0, 4\]"):
        lookup_ops.gather_accumulate(scores, bad, tables)
    bad[2, 1] = -1
    with pytest.raises(ValueError, match=r"codes in \[0, 4\), got values in \[-1, "):
        lookup_ops.gather_accumulate(scores, bad, tables)


def test_pack_tables_layout_and_huge_page_buffer():
    tables = torch.randn(3, 8, 70)
    packed = lookup_ops.pack_tables(tables)
    assert packed.shape == (3, 2, 8, 64)
    assert_exact(packed[:, 1, :, :6], tables[:, :, 64:])
    assert_exact(packed[:, 0], tables[:, :, :64])
    assert not packed[:, 1, :, 6:].any()  # zero padding past d
    big = lookup_ops.pack_tables(torch.randn(64, 16, 512))  # 2 MiB: huge-page backed
    assert big.data_ptr() % (2 << 20) == 0


def test_empty_batch_gives_zero_table_gradient():
    scores, codes, tables = _inputs(0, 3, 2, 5)
    tables.requires_grad_()
    lookup_ops.gather_accumulate(scores, codes, tables).sum().backward()
    assert tables.grad.shape == tables.shape and not tables.grad.any()


def test_big_batch_gather_through_packed_tables(isa):
    n = lookup_ops.PACKED_GATHER_MIN + 77  # the packed, table-major training gather
    scores, codes, tables = _inputs(n, 10, 5, 70)
    got = lookup_ops.gather_accumulate(scores, codes, tables)
    assert_kernel_close(got, lookup_ops.gather_reference(scores, codes, tables), what=isa)


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_hadamard_is_the_fwht_matrix(n):
    hn = lookup_ops.hadamard(n)
    assert torch.equal(hn @ hn, n * torch.eye(n, dtype=torch.float64))
    x = torch.randn(5, n, dtype=torch.float64)
    torch.testing.assert_close(x @ hn, fwht_reference(x), rtol=1e-12, atol=1e-12)


def test_hadamard_rejects_a_width_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power of two, got 12"):
        lookup_ops.hadamard(12)


@pytest.mark.parametrize("b", [1, 4, 16, 64])
def test_pack_bh4_folds_the_in_block_fwht_stages(b):
    # one BH4 stage, D = 64: the packed blocks then the FWHT across blocks (H_{D/b} over the
    # block index) equal the block products then the whole orthonormal FWHT
    D, n = 64, 7
    blocks = torch.randn(1, 4, D // b, b, b, dtype=torch.float64)  # [out, in]
    x = torch.randn(n, D, dtype=torch.float64)
    xb = x.reshape(n, D // b, b)  # (N, blocks, b_in)
    want = fwht_reference(torch.einsum("njb,jab->nja", xb, blocks[0, 0]).reshape(n, D), D**-0.5)
    packed = lookup_ops.pack_bh4(blocks)  # (1, 4, D/b, b_in, b_out) float32
    assert packed.dtype == torch.float32 and packed.shape == blocks.shape
    u = torch.einsum("njb,jba->nja", xb, packed[0, 0].double())  # (N, blocks, b_out)
    got = torch.einsum("nja,jk->nka", u, lookup_ops.hadamard(D // b)).reshape(n, D)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
