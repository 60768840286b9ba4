"""Eval kernels called from several Python threads at once (each call releases the GIL and keeps
its scratch per OS thread): every call must give what the same call gives alone."""

import threading

import pytest
import torch

from liteffn import LUTFFN, FastFeedForward, LookupFFN, ops

# (name, layer, batch sizes): each kernel's small- and large-batch schedules, and shapes that
# size the per-thread scratch differently, so threads that share nothing but the process would
# corrupt each other's results if any scratch were shared.
CASES = [
    ("fff", lambda: FastFeedForward(48, depth=7), (1, 5, 300)),
    ("fff-wide", lambda: FastFeedForward(96, depth=4), (3, 70)),
    ("lookup-bh4", lambda: LookupFFN(64, 24, 6, block_size=16), (1, 2, 31, 1100)),
    ("lookup-dense", lambda: LookupFFN(40, 9, 5, projection="dense"), (1, 45)),
    ("lut", lambda: LUTFFN(16, 4, hidden_luts=64, luts_per_output=4, lut_inputs=4), (1, 200)),
]


def test_concurrent_eval_calls_match_sequential_ones():
    if not ops.native_available():
        pytest.skip("native module not built")
    torch.manual_seed(0)
    jobs = []  # (layer, x, expected y) for every case and batch
    for _, make, batches in CASES:
        layer = make().eval()
        for n in batches:
            x = torch.randn(n, layer.d_model)
            with torch.inference_mode():
                jobs.append((layer, x, layer(x).clone()))
    failures: list[str] = []
    start = threading.Barrier(4)

    def work(seed: int) -> None:
        order = torch.randperm(len(jobs), generator=torch.Generator().manual_seed(seed))
        start.wait()
        with torch.inference_mode():
            for _ in range(5):
                for i in order.tolist():
                    layer, x, want = jobs[i]
                    if not torch.equal(layer(x), want):
                        failures.append(f"{type(layer).__name__} batch {x.shape[0]}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, f"concurrent calls differ from sequential ones: {sorted(set(failures))}"
