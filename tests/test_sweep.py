import json

import pytest

from liteffn import sweep
from liteffn.cli import main


def _row(task, label, family, flops, metric, d_ff=None, d=32):
    ffn = {"kind": "dense", "d_ff": d_ff} if d_ff else {"kind": family}
    return {
        "task": task, "label": label, "family": family, "ffn": ffn, "d_model": d, "steps": 10,
        "flops_per_token": flops, "flops_vs_dense": 16 * d * d / flops, "bytes_per_token": 1,
        "ffn_us_per_token": 1.0, "ffn_speedup_vs_dense": 1.0, "val_loss": 1.0,
        "val_ppl": metric if task != "vit" else None,
        "val_acc": metric if task == "vit" else None, "train_seconds": 1.0,
    }  # fmt: skip


def test_targets_are_judged_with_their_margins():
    rows = [
        _row("lm", "dense", "dense", 16384, 10.0),
        _row("lm", "narrow", "dense-narrow", 2048, 12.0, d_ff=16),
        _row("lm", "lookup h=8", "lookup", 2048, 10.4),
        _row("lm", "fff", "fff", 2048, 12.5),
        _row("vit", "dense", "dense", 16384, 0.90),
        _row("vit", "lut", "lut", 4096, 0.885),
    ]
    text = sweep.format_report(rows, skipped=["x"])
    assert "ppl 1.040x dense (target <= 1.05x): **met**" in text
    assert "fff: val ppl 12.500 vs dense narrowed to the same FLOPs (d_ff=16) 12.000" in text
    assert "better than narrowed dense: **missed**" in text
    assert "lookup h=8: val ppl 10.400 vs dense narrowed" in text
    assert "accuracy +1.50 points below dense (target <= 1.0): **missed**" in text
    assert "| lookup h=8 | 2,048 | 8.0x |" in text
    assert "Not in this run (layer not available on this branch): x" in text


def test_plan_matches_narrow_dense_to_each_lite_point():
    points, skipped = sweep.plan(["lm"], 32)
    fams = {p.family for p in points}
    assert {"dense"} <= fams <= {"dense", "dense-narrow", "lookup", "fff", "lut"}
    lite = [p for p in points if p.family in ("lookup", "fff", "lut")]
    narrow = sorted(p.ffn.d_ff for p in points if p.family == "dense-narrow")
    want = sorted({max(1, round(p.ffn.build(32).cost().flops_per_token / 128)) for p in lite})
    assert narrow == want
    assert set(skipped) | {p.family for p in lite} == {"lookup", "fff", "lut"}
    assert all(p.table_lr_mult == sweep.TABLE_LR_MULT.get(p.family, 1.0) for p in points)
    only_dense, _ = sweep.plan(["vit"], 32, families=["dense"])
    assert [p.label for p in only_dense] == ["dense d_ff=4d"]


def test_sweep_cli_tiny_writes_table_and_plot_and_skips_done_points(tmp_path, capsys):
    args = ["sweep", "--tiny", "--tasks", "lm", "--families", "dense", "--steps", "3",
            "--out", str(tmp_path), "--latency-tokens", "16"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| dense d_ff=4d | 16,384 | 1.0x |" in out
    rows = [json.loads(ln) for ln in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["steps"] == 3 and rows[0]["val_ppl"] > 1
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "sweep.md").read_text().startswith("CPU:")
    assert main(args) == 0  # everything done: nothing retrained
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    assert main([*args[:-4], "--report-only", "--out", str(tmp_path)]) == 0


def test_sweep_with_no_results_is_a_clear_error(tmp_path, capsys):
    assert main(["sweep", "--report-only", "--out", str(tmp_path)]) == 1
    assert "no sweep results" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["vit"])
def test_plot_handles_accuracy_tasks(tmp_path, task):
    sweep.plot([_row(task, "dense", "dense", 100, 0.5)], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
