"""distill_: layer-wise fits reduce each layer's error, end-to-end reduces the output error,
checkpoints resume."""

from __future__ import annotations

import copy

import pytest
import torch
from _tiny import TINY, main_output, tiny_inputs

from liteffn.config import DenseConfig
from liteffn.convert import convert_, distill_, make_batches
from liteffn.convert import distill as distill_mod


def _pair(arch="bert", d_ff=64):
    torch.manual_seed(0)
    teacher = TINY[arch]().eval()
    student = convert_(copy.deepcopy(teacher), DenseConfig(d_ff=d_ff))
    return teacher, student


def _calib(arch, n=32):
    g = torch.Generator().manual_seed(3)
    if arch == "vit":
        return torch.randn(n, 3, 16, 16, generator=g)
    return torch.randint(0, 99, (n, 12), generator=g)


@torch.no_grad()
def _out_err(student, teacher, arch):
    inputs = tiny_inputs(arch, batch=4)
    return float((main_output(student, inputs) - main_output(teacher, inputs)).pow(2).mean())


@pytest.mark.parametrize("sequential", [True, False])
def test_layerwise_fit_reduces_error(arch, sequential):
    teacher, student = _pair(arch)
    err0 = _out_err(student, teacher, arch)
    rep = distill_(
        student, teacher, _calib(arch), layer_steps=100, layer_lr=1e-2, token_batch=256,
        progress=False, sequential=sequential,
    )  # fmt: skip
    assert len(rep["layers"]) == 2
    for r in rep["layers"].values():
        assert r["rel_mse_after"] < 0.2 * r["rel_mse_before"]
    assert not student.training
    assert _out_err(student, teacher, arch) < 0.2 * err0


def test_end_to_end_reduces_output_error_and_freezes_the_rest():
    teacher, student = _pair("bert", d_ff=8)
    distill_(student, teacher, _calib("bert"), layer_steps=30, progress=False)
    frozen = {k: v.clone() for k, v in student.state_dict().items() if "intermediate" not in k}
    err1 = _out_err(student, teacher, "bert")
    rep = distill_(
        student, teacher, _calib("bert"), layer_steps=0, e2e_steps=40, e2e_lr=5e-3,
        progress=False,
    )  # fmt: skip
    assert len(rep["e2e_losses"]) == 40
    assert _out_err(student, teacher, "bert") < err1
    for k, v in student.state_dict().items():
        if k in frozen:
            torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
    assert all(p.requires_grad for p in student.parameters())


def test_logits_target_for_causal_lm():
    teacher, student = _pair("llama", d_ff=8)
    rep = distill_(student, teacher, _calib("llama"), layer_steps=5, e2e_steps=5, progress=False)
    assert len(rep["e2e_losses"]) == 5 and all(x >= 0 for x in rep["e2e_losses"])


def test_checkpoint_resumes_without_refitting(tmp_path, monkeypatch):
    ckpt = tmp_path / "distill.pt"
    teacher, first = _pair("bert", d_ff=16)
    distill_(first, teacher, _calib("bert"), layer_steps=20, checkpoint=ckpt, progress=False)
    assert ckpt.is_file()
    # one file per fitted layer; the checkpoint itself holds no layer weights
    files = sorted(p.name for p in (tmp_path / "distill.pt.layers").iterdir())
    assert files == ["encoder.layer.0.pt", "encoder.layer.1.pt"]
    assert "layers" not in torch.load(ckpt, weights_only=False)
    _, second = _pair("bert", d_ff=16)

    def no_refit(*args, **kwargs):
        raise AssertionError("a finished layer was fitted again")

    monkeypatch.setattr(distill_mod, "_fit_layer", no_refit)
    rep = distill_(second, teacher, _calib("bert"), layer_steps=20, checkpoint=ckpt, progress=False)
    assert set(rep["layers"]) == {"encoder.layer.0", "encoder.layer.1"}
    inputs = tiny_inputs("bert")
    with torch.no_grad():
        torch.testing.assert_close(main_output(second, inputs), main_output(first, inputs))
    with pytest.raises(ValueError, match="from another conversion or other settings"):
        distill_(second, teacher, _calib("bert"), layer_steps=21, checkpoint=ckpt, progress=False)
    (tmp_path / "distill.pt.layers" / "encoder.layer.1.pt").unlink()
    with pytest.raises(ValueError, match=r"'encoder.layer.1' as fitted but its file .* missing"):
        distill_(second, teacher, _calib("bert"), layer_steps=20, checkpoint=ckpt, progress=False)
    distill_mod.remove_checkpoint(ckpt)
    assert list(tmp_path.iterdir()) == []


def test_text_batches_and_errors():
    class Tok:
        pad_token = "[PAD]"

        def __call__(self, texts, **kw):
            ids = torch.tensor([[len(t) % 99] * 5 for t in texts])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "other": ids}

    batches = make_batches(["a", "bb", "ccc"], Tok(), batch_size=2)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1]
    assert set(batches[0]) == {"input_ids", "attention_mask"}
    with pytest.raises(ValueError, match="needs tokenizer="):
        make_batches(["a"])
    with pytest.raises(ValueError, match="calibration data is empty"):
        make_batches([])
    teacher, _ = _pair()
    with pytest.raises(ValueError, match="was not converted"):
        distill_(copy.deepcopy(teacher), teacher, _calib("bert"), progress=False)


@pytest.mark.slow
def test_distill_under_torchrun(tmp_path):
    # Two ranks, each on its half of the calibration batches, gradients averaged: both ranks end
    # with identical weights and an identical report.
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": str(here), "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node=2", "--master_port=29517",
           str(here / "_torchrun_worker.py"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    assert r0["report"]["layers"] == r1["report"]["layers"]
    for k, v in r0["state"].items():
        torch.testing.assert_close(v, r1["state"][k], rtol=0, atol=0)
    assert all(v["rel_mse_after"] < v["rel_mse_before"] for v in r0["report"]["layers"].values())
