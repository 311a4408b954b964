# behavior-stream developer entry points. `make demo` and `make test` are the quick start.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install constraints demo test test-faults lint bench bench-gpu bench-gpu-dry clean

install: $(STAMP)

# Everything (serving + the [train] and [explain] extras + dev tools), at the versions in
# constraints.txt; `pip install .` alone gives the slim serving set (docs/DESIGN.md).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the local CPU wheel, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,rocksdb,train,explain]'
	@command -v kcat >/dev/null 2>&1 || ./.ci/install-kcat || echo "kcat not installed: kcat interop tests will be skipped"
	touch $(STAMP)

# Re-pin constraints.txt to this venv's versions (after an upgrade that passed `make test`).
constraints:
	$(BIN)/python .ci/lock-constraints

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/bstream demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" --durations=15

test-faults: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/faults

lint: install
	$(BIN)/ruff check stream model schemas tests
	$(BIN)/ruff format --check stream model schemas tests
	$(BIN)/mypy stream model schemas
	$(BIN)/lint-imports

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/bstream bench --json bench-report/bench.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# GPU checks in one go (< 10 min): bf16 vs fp32 parity, batch-size curve, bench-model, bench --quick
# on cuda. BUNDLE=path/to/bundle; `make bench-gpu-dry` runs the CPU dry mode (as `make test` does).
BUNDLE ?= $(shell ls -dt .bstream/bundles/*/ 2>/dev/null | head -1)
bench-gpu: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m stream.bench.gpu --bundle $(BUNDLE) --out bench-gpu

bench-gpu-dry: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m stream.bench.gpu --bundle $(BUNDLE) --out bench-gpu --dry-run
