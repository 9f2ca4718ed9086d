# Every target sets up .venv on first use (torch pinned to the CPU wheel these machines carry).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements/constraints.txt torch
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[test]'
	touch $@

demo: $(STAMP) ## lstmkit demo: forecast Mauna Loa CO2, report against naive baselines (in lstmkit-demo/)
	$(BIN)/lstmkit demo --overwrite

test: $(STAMP) ## run the test suite (unit, property and doc tests)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE: set on some of this workplace's machines, they force OpenBLAS's
# AVX2 kernels on AVX-512 processors (half the kernel's product rate); see BENCHMARKS.md
bench: $(STAMP) ## time and peak memory of lstmkit.LSTM against torch.nn.LSTM, and lstmkit.RNN against torch.nn.RNN (the tables in BENCHMARKS.md)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_lstm.py --rounds 10
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench_memory.py --repeats 5

clean: ## remove the virtual environment, caches and the demo's report
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache src/*.egg-info lstmkit-demo
