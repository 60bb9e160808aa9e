# bizzyd: the two commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv deps test lint demo docs bench services services-stop clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

deps:
	scripts/install-deps test

lint: venv
	$(VENV)/bin/ruff check .

# Local PostgreSQL, memcached and mosquitto on loopback, state in ./state
# (scripts/services; ports in scripts/services.env). Idempotent.
services:
	scripts/services start

services-stop:
	scripts/services stop

test: venv deps lint
	BIZZYD_PG_FAST=1 scripts/services start
	eval "$$(scripts/services env)" && $(PY) -m pytest -q

# Runs bizzyd in the foreground on the default config, logging to the terminal.
demo: venv
	$(VENV)/bin/bizzyd -p . -c conf/bizzyd.yaml -e stderr

clean:
	rm -rf $(VENV) run logs .pytest_cache .ruff_cache

docs: venv
	$(PY) -m bizzyd.config.docs > docs/config.md

# Loopback HTTP benchmark (bizzyd vs uvicorn vs nginx with wrk; see bench/README.md).
# Extra flags: make bench BENCH_ARGS='--duration 5 --workers 1'
BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-deps
bench-deps: venv
	scripts/install-deps bench
	$(VENV)/bin/pip install -q -r bench/requirements.txt

bench: bench-deps
	$(PY) bench/http_bench.py $(BENCH_ARGS)
