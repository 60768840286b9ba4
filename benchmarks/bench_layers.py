"""Layer benchmarks: each lite layer vs PyTorch's dense FFN, same run, same threads.

    python benchmarks/bench_layers.py             # all cases, batch 1/128, 1/all threads
    python benchmarks/bench_layers.py --targets   # the (threads, batch) points the issues set
    python benchmarks/bench_layers.py fff --batch 1 128 16384 --threads 1 2 \
        --markdown benchmarks/out/fff.md --csv benchmarks/out/fff.csv

Thin wrapper over `liteffn bench` (liteffn.bench holds the harness); output goes to stdout and,
with --markdown/--csv, to files that can be pasted into benchmarks/RESULTS.md.
"""

import sys

from liteffn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
