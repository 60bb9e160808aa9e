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

# The demo: local services, schema, demo city (first time only), then bizzyd in the
# foreground on conf/demo.yaml, logging to the terminal (Ctrl-C stops it).
DEMO := $(VENV)/bin/bizzyd -p . -c conf/demo.yaml
demo: venv
	scripts/install-deps test
	scripts/services start
	eval "$$(scripts/services env)" && $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" migrate up
	eval "$$(scripts/services env)" && $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" \
		demo-data --if-empty --hives 2000 --seed 1
	@echo "bizzyd: http://127.0.0.1:8080/health  /health/db  /status  /metrics"
	eval "$$(scripts/services env)" && exec $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" \
		-e stderr

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
