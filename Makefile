# Developer entry points. Every target sets up .venv first (idempotent: scripts/setup.sh).
PY := .venv/bin/python
ASAN_BUILD := build/asan
KERNEL_TESTS ?= tests/ops tests/layers

.PHONY: setup bench demo test test-fast lint format sanitize clean

setup:
	@bash scripts/setup.sh

demo: setup  ## convert the bundled MiniLM sentence encoder and report FLOPs, fidelity, speed
	$(PY) -m liteffn demo

bench: setup  ## the layer benchmark table (all available families vs dense)
	$(PY) -m liteffn bench

test: setup  ## the whole suite; the native build must be loaded
	LITEFFN_REQUIRE_NATIVE=1 $(PY) -m pytest -q

test-fast: setup
	LITEFFN_REQUIRE_NATIVE=1 $(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m ruff format --check src tests benchmarks scripts
	$(PY) scripts/check_columns.py csrc benchmarks

format: setup
	$(PY) -m ruff format src tests benchmarks scripts
	$(PY) -m ruff check --fix src tests benchmarks scripts

sanitize: setup  ## build the native module with ASan + UBSan and run the kernel tests on it
	bash scripts/sanitize.sh $(KERNEL_TESTS)

clean:
	rm -rf build $(ASAN_BUILD) .pytest_cache .ruff_cache
