#!/usr/bin/env bash
# Build liteffn._native with AddressSanitizer + UBSan into build/asan and run the given tests
# against that build (LITEFFN_NATIVE_LIB). Usage: bash scripts/sanitize.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=build/asan
pybind11_dir=$($PY -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLITEFFN_SANITIZE=ON \
  -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$(realpath $PY)" > "$out.log" 2>&1 \
  || { cat "$out.log"; exit 1; }
cmake --build "$out" -j 2 >> "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
lib=$(ls "$out"/_native*.so)
asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
if [ $# -gt 0 ]; then tests=("$@"); else tests=(tests/ops tests/layers); fi
echo "[sanitize] running kernel tests on $lib"
# Python itself leaks by design at exit, so leak checking is off; every other report aborts.
LD_PRELOAD="$asan $ubsan" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
LITEFFN_NATIVE_LIB="$lib" LITEFFN_REQUIRE_NATIVE=1 \
  "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"
