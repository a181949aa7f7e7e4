# splitrec: `make demo` sets everything up and runs the census pipeline; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
WORKDIR ?= runs/census
TEST_WORKERS ?= 2

.PHONY: install demo demo-distributed test test-fast lint ui bench-psi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,rr22]"
	touch $(STAMP)

install: $(STAMP)

## Fetch census-income, split it into three parties, run the whole pipeline (with the central baseline).
demo: install
	$(BIN)/splitrec data census --workdir $(WORKDIR)
	$(BIN)/splitrec run data/census.toml --workdir $(WORKDIR) --centralized

## The same census pipeline as three organisations: a process each, with its own folder, Prefect
## and Flight port on 127.0.0.1, talking over mutual TLS with certificates made for the trial.
demo-distributed: install
	$(BIN)/splitrec data census --workdir $(WORKDIR)
	$(BIN)/python deployments/distributed.py --config data/census.toml --data-workdir $(WORKDIR) --out runs/distributed

## Every test: tests/unit, tests/integration (processes, Prefect, Flight), tests/slow (census);
## a file at a time on each of TEST_WORKERS workers (pytest-xdist).
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

## The unit tests only: no Prefect API, Flight, Dask or party processes; synthetic data.
test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests/unit

## ruff: pyflakes, pycodestyle, import order, docstrings (Google convention); mypy on
## splitrec_core (its settings are in pyproject.toml). CI runs both first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

## A local Prefect server with the UI at http://127.0.0.1:4200, serving the scheduled pipeline.
ui: install
	$(BIN)/splitrec data census --workdir $(WORKDIR)
	VENV=$(VENV) WORKDIR=$(WORKDIR) bash deployments/ui.sh

## PSI benchmark against openmined-psi and the libsodium floor (about 25 minutes on 2 cores).
bench-psi: install
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	mkdir -p runs
	$(BIN)/python benchmarks/psi.py --json runs/psi-benchmark.json

clean:
	rm -rf runs
