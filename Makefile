# Two commands from a fresh clone:  `make demo`  and  `make test`. Both create the environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo demo-dvc demo-results test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The demo pipeline (synthetic data, no network) through Snakemake; `make demo-dvc` runs the same DAG with DVC.
demo: setup
	PATH=$(abspath $(BIN)):$$PATH snakemake --cores 2 results/report.html
	@echo "Open results/report.html"

# The demo's headline numbers, with the commit they came from, into docs/demo-results.md (after `make demo`).
demo-results: setup
	$(PY) -m repropipe pipeline demo-results

demo-dvc: setup
	PATH=$(abspath $(BIN)):$$PATH dvc repro
	@echo "Open results/report.html"

# Every test, end-to-end runs of both orchestrators and the headless-browser check included.
test: setup
	bash scripts/system-deps.sh
	PATH=$(abspath $(BIN)):$$PATH pytest

# Unit tests only (seconds).
test-fast: setup
	PATH=$(abspath $(BIN)):$$PATH pytest -m "not e2e and not browser"

# The generated DAG files are current and the Snakemake workflow lints clean.
lint: setup
	$(PY) -m repropipe pipeline write-dag --check
	PATH=$(abspath $(BIN)):$$PATH snakemake --lint

clean:
	rm -rf results .snakemake dvc.lock logs benchmarks
