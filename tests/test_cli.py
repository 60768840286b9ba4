import json

import pytest

from liteffn.cli import main
from liteffn.ops import lookup as lookup_ops


def test_info_reports_native_and_isa(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["native"] in (True, False)
    assert set(info) >= {"isa", "cpu_features", "torch_threads", "liteffn"}
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


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "liteffn" in capsys.readouterr().out
