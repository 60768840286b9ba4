import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from liteffn import checkpoint
from liteffn.checkpoint import latest_checkpoint, load_model
from liteffn.cli import main
from liteffn.config import DenseConfig
from liteffn.train import TrainConfig, lr_scale, param_groups, train


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


@pytest.mark.parametrize("task", ["lm", "mlm", "vit"])
def test_cli_tiny_run_trains_evaluates_and_checkpoints(task, tmp_path, capsys):
    out = tmp_path / task
    args = ["train", task, "--tiny", "--out", str(out), "--quiet", "--steps", "12"]
    assert main([*args, "--eval-every", "6", "--ckpt-every", "6"]) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["step"] == 12
    lines = _lines(out / "metrics.jsonl")
    assert [ln["step"] for ln in lines] == list(range(1, 13))
    assert "val_loss" in lines[5] and "val_loss" in lines[11] and "val_loss" not in lines[6]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]  # it learns
    assert math.isfinite(final["val_loss"])
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt.name == "step_0000012"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer.pt",
    ]
    config = json.loads((ckpt / "config.json").read_text())
    assert config["train"]["task"] == task and config["model"]["kind"] == task
    model = load_model(out / "checkpoints")
    assert not model.training
    weights = load_file(str(ckpt / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(weights[k], v)


def test_resume_continues_the_same_run_exactly(tmp_path):
    cfg = dict(steps=10, eval_every=4, ckpt_every=100, dropout=0.1)  # dropout: RNG matters
    straight = TrainConfig.tiny_preset("lm", out_dir=str(tmp_path / "a"), **cfg)
    train(straight, progress=False)
    interrupted = TrainConfig.tiny_preset("lm", out_dir=str(tmp_path / "b"), **cfg)
    train(interrupted, stop_after=6, progress=False)
    # a run that died after logging step 7 but before its next checkpoint: the line is dropped
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "train_loss": 0.0}) + "\n")
    train(interrupted, resume=True, progress=False)

    def strip(lines):
        return [{k: v for k, v in ln.items() if k != "grad_norm"} for ln in lines]

    a = _lines(tmp_path / "a" / "metrics.jsonl")
    b = _lines(tmp_path / "b" / "metrics.jsonl")
    assert strip(a) == strip(b)
    wa = load_file(str(latest_checkpoint(tmp_path / "a" / "checkpoints") / "model.safetensors"))
    wb = load_file(str(latest_checkpoint(tmp_path / "b" / "checkpoints") / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_refuses_a_different_config_and_new_run_refuses_to_overwrite(tmp_path):
    cfg = TrainConfig.tiny_preset("lm", out_dir=str(tmp_path), steps=4)
    train(cfg, stop_after=2, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, progress=False)
    changed = TrainConfig.tiny_preset("lm", out_dir=str(tmp_path), steps=4, lr=1e-2)
    with pytest.raises(ValueError, match=r"config differs \(lr: saved 0.003 vs now 0.01\)"):
        train(changed, resume=True, progress=False)


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    root = tmp_path / "ckpt"
    checkpoint.save_checkpoint(root, 1, model, {"x": 1}, {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(root, 2, model, {"x": 2}, {"step": 2})
    assert latest_checkpoint(root).name == "step_0000001"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000001"]


def test_keep_only_the_newest_checkpoints(tmp_path):
    model = nn.Linear(3, 2)
    for step in range(1, 5):
        checkpoint.save_checkpoint(tmp_path, step, model, {}, {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000003", "step_0000004"]


def test_param_groups_route_tables_to_their_own_lr():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.lut = nn.Module()
            self.lut.table = nn.Parameter(torch.zeros(4, 64))
            self.tables = nn.Parameter(torch.zeros(2, 16, 4))

    toy = Toy()
    groups = {g["name"]: g for g in param_groups(toy, 1e-3, 5e-2, 0.1)}
    assert {id(p) for p in groups["tables"]["params"]} == {id(toy.lut.table), id(toy.tables)}
    assert groups["tables"]["lr"] == 5e-2 and groups["tables"]["weight_decay"] == 0.0
    assert len(groups["decay"]["params"]) == 1 and groups["decay"]["weight_decay"] == 0.1
    assert len(groups["no_decay"]["params"]) == 1 and groups["no_decay"]["lr"] == 1e-3
    assert {g["name"] for g in param_groups(nn.Linear(2, 2), 1e-3, None, 0.1)} == {
        "decay",
        "no_decay",
    }


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, warmup=10, min_lr_ratio=0.1)
    assert lr_scale(0, cfg) == pytest.approx(0.1)
    assert lr_scale(9, cfg) == pytest.approx(1.0)
    assert lr_scale(10, cfg) == pytest.approx(1.0)
    assert lr_scale(60, cfg) == pytest.approx(0.55)
    assert lr_scale(110, cfg) == pytest.approx(0.1)


def test_train_config_validation_and_round_trip():
    cfg = TrainConfig(task="vit", ffn=DenseConfig(d_ff=64), steps=5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(task="gpt")
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        TrainConfig(steps=0)


def test_cli_ffn_options_are_parsed(tmp_path):
    from liteffn.cli import build_parser
    from liteffn.cli.train import build_config

    args = build_parser().parse_args(
        ["train", "lm", "--tiny", "--ffn", "dense", "--ffn-opt", "d_ff=48", "--lr", "0.01",
         "--out", str(tmp_path)]
    )  # fmt: skip
    cfg = build_config(args)
    assert cfg.ffn == DenseConfig(d_ff=48) and cfg.lr == 0.01 and cfg.tiny
    bad = build_parser().parse_args(["train", "lm", "--ffn-opt", "nonsense"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        build_config(bad)
    assert main(["train", "lm", "--ffn-opt", "d_ff=0", "--out", str(tmp_path)]) == 1


def test_lut_truth_tables_are_clamped_after_a_step_other_tables_are_not():
    from liteffn.train import _clamp_tables

    m = nn.Module()
    m.lut = nn.Module()
    m.lut.table = nn.Parameter(torch.tensor([[-3.0, 0.5, 2.0]]))
    m.tables = nn.Parameter(torch.tensor([[-3.0, 2.0]]))
    _clamp_tables(m)
    assert m.lut.table.tolist() == [[-1.0, 0.5, 1.0]]
    assert m.tables.tolist() == [[-3.0, 2.0]]
