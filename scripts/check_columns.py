"""Fail (exit 1) when a C/C++ source line is wider than 100 characters (ruff covers Python).

python scripts/check_columns.py csrc benchmarks
"""

import sys
from pathlib import Path

LIMIT = 100
SUFFIXES = {".c", ".cpp", ".h"}


def main(roots: list[str]) -> int:
    bad = 0
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.suffix not in SUFFIXES:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if len(line) > LIMIT:
                    print(f"{path}:{number}: {len(line)} > {LIMIT} columns")
                    bad = 1
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["csrc", "benchmarks"]))
