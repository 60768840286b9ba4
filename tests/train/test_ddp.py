"""DDP on CPU (gloo): 2 processes under torchrun train exactly the 1-process run with the same
global batch.

Tolerance policy: every logged step's training loss, gradient norm and validation loss agree
within ``rtol = 1e-5`` (``liteffn.testing.KERNEL_RTOL``). The runs are the same computation on
the same batches; only floating-point summation order differs (each rank reduces half the batch,
then gloo sums the two gradient halves), which moves results by a few float32 ulps per step.
"""

import json
import os
import subprocess
import sys

import pytest

from liteffn.testing import KERNEL_RTOL

pytestmark = pytest.mark.slow


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LITEFFN_CACHE": os.environ.get(
        "LITEFFN_CACHE", os.path.expanduser("~/.cache/liteffn"))}  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _metrics(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_two_process_ddp_matches_one_process(tmp_path):
    common = ["train", "mlm", "--tiny", "--steps", "8", "--eval-every", "4", "--quiet"]
    two = tmp_path / "two"
    one = tmp_path / "one"
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "liteffn", *common, "--out", str(two)],
        tmp_path,
    )  # fmt: skip
    _run([sys.executable, "-m", "liteffn", *common, "--threads", "1", "--out", str(one)], tmp_path)
    a, b = _metrics(one / "metrics.jsonl"), _metrics(two / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        # grad_norm catches a wrong loss normalisation: mlm masks a different number of tokens
        # on each rank, and a per-rank mean averaged by DDP is not the global-batch mean
        for key in ("train_loss", "grad_norm", "val_loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=KERNEL_RTOL), (ra["step"], key)
