"""The pooled output buffers (ops._outbuf): reused only once no tensor over them is alive."""

import threading

import torch

from liteffn import FastFeedForward, ops
from liteffn.ops import _outbuf

BIG = (_outbuf.MIN_BYTES // 4 // 768 + 1, 768)  # just above the pooling threshold


def test_small_outputs_are_plain_tensors():
    y = _outbuf.empty((4, 768))
    assert y.shape == (4, 768) and y.dtype == torch.float32 and y.is_contiguous()


def test_large_outputs_are_aligned_and_reused_only_when_free():
    a = _outbuf.empty(BIG)
    assert a.shape == BIG and a.dtype == torch.float32 and a.is_contiguous()
    assert a.data_ptr() % (2 << 20) == 0
    b = _outbuf.empty(BIG)  # a is alive: a different mapping
    assert b.data_ptr() != a.data_ptr()
    row = a[5]  # a view keeps a's mapping in use
    ptr = a.data_ptr()
    del a
    c = _outbuf.empty(BIG)
    assert c.data_ptr() not in (ptr, b.data_ptr())
    freed = {ptr, c.data_ptr()}
    del row, c
    d = _outbuf.empty(BIG)  # a's and c's mappings are free again: one of them comes back
    assert d.data_ptr() in freed


def test_pool_stays_within_its_cap():
    held = [_outbuf.empty(BIG) for _ in range(_outbuf.MAX_POOL_BYTES // (BIG[0] * 768 * 4) + 3)]
    assert sum(r.size for r in _outbuf._regions) <= _outbuf.MAX_POOL_BYTES
    ptrs = {t.data_ptr() for t in held}
    assert len(ptrs) == len(held)  # over the cap: plain tensors, still distinct
    del held


def test_threads_never_share_a_buffer():
    out: list[torch.Tensor] = []
    lock = threading.Lock()

    def take():
        for _ in range(20):
            t = _outbuf.empty(BIG)
            with lock:
                out.append(t)

    workers = [threading.Thread(target=take) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len({t.data_ptr() for t in out}) == len(out)


def test_layer_outputs_alive_together_stay_correct():
    torch.manual_seed(0)
    layer = FastFeedForward(64, depth=3).eval()
    n = _outbuf.MIN_BYTES // (4 * 64) + 10  # large enough to be pooled
    x1, x2 = torch.randn(n, 64), torch.randn(n, 64)
    with torch.inference_mode():
        y1 = layer(x1)
        ref1 = y1.clone()
        y2 = layer(x2)  # y1 is alive: y2 must not overwrite it
        assert torch.equal(y1, ref1)
        assert y1.data_ptr() != y2.data_ptr()
        if ops.native_available():
            idx = torch.arange(0, n, 997)
            torch.testing.assert_close(y2[idx], layer.reference(x2[idx]), rtol=1e-5, atol=1e-5)
