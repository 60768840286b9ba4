import json
import os
import subprocess
import sys

import pytest

from liteffn import bench, ops
from liteffn.cli import build_parser, main
from liteffn.cli.bench import command_line
from liteffn.ops import lookup as lookup_ops


def test_info_reports_native_and_isa(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["native"] in (True, False)
    assert set(info) >= {"isa", "cpu_features", "torch_threads", "liteffn", "dense_isa"}
    assert info["dense_isa"].startswith("ATen ")
    if info["native"]:
        assert info["isa"] in info["available_isas"]
        shape = info["lookup_table_major"]
        assert (shape["group"], shape["tile"], shape["ahead"]) == lookup_ops.table_major_shape()


def test_bench_prints_dense_row_with_ratio(capsys, tmp_path):
    csv_path = tmp_path / "rows.csv"
    code = main(
        [
            "bench",
            "dense",
            "--batch",
            "1",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--min-time",
            "0.001",
            "--csv",
            str(csv_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| dense | DenseFFN(d_model=768, d_ff=3072) | 3072 | 1 | 1 |" in out
    assert "speedup vs dense" in out
    assert csv_path.read_text().startswith("case,")


def test_bench_unknown_case_is_a_clear_error(capsys):
    assert main(["bench", "nosuch", "--repeats", "1"]) == 1
    assert "unknown benchmark case 'nosuch'" in capsys.readouterr().err


def test_bench_isa_caps_name_what_is_missing(monkeypatch):
    with pytest.raises(ValueError, match="--isa must be one of avx2, avx512, got 'sse'"):
        bench.isa_caps_missing("sse", {})
    monkeypatch.setattr(ops, "available_isas", lambda: ["scalar"])
    with pytest.raises(ValueError, match="--isa avx2: this machine's kernels run at scalar"):
        bench.isa_caps_missing("avx2", {})
    monkeypatch.setattr(ops, "available_isas", lambda: ["scalar", "avx2"])
    caps = bench.ISA_CAPS["avx2"]
    assert bench.isa_caps_missing("avx2", {}) == caps
    assert bench.isa_caps_missing("avx2", {**caps, "MKL_ENABLE_INSTRUCTIONS": "AVX512"}) == {
        "MKL_ENABLE_INSTRUCTIONS": "AVX2"
    }
    assert bench.isa_caps_missing("avx2", dict(caps)) == {}


def test_bench_command_line_reproduces_the_arguments():
    argv = ["bench", "fff", "lookup", "--batch", "1", "128", "--threads", "2", "--targets"]
    argv += ["--repeats", "3", "--min-time", "0.01", "--csv", "r.csv", "--isa", "avx2"]
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(command_line(args))
    assert vars(again) == vars(args)


@pytest.mark.skipif("avx2" not in ops.available_isas(), reason="needs the AVX2 kernels")
def test_bench_isa_restarts_with_both_sides_capped():
    cmd = [sys.executable, "-m", "liteffn", "bench", "dense", "--batch", "1", "--threads", "1"]
    cmd += ["--repeats", "1", "--min-time", "0.001", "--isa", "avx2"]
    env = {k: v for k, v in os.environ.items() if k not in bench.ISA_CAPS["avx2"]}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(isa avx2) | dense: ATen AVX2, MKL AVX2, oneDNN AVX2" in done.stdout
    assert "| dense | DenseFFN(d_model=768, d_ff=3072) | 3072 | 1 | 1 |" in done.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "liteffn" in capsys.readouterr().out
