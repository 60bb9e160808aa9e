# bizzyd: the two commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
# the demo city's history ends at the current UTC hour
DEMO_NOW = $$(date -u +%Y-%m-%dT%H:00Z)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv deps test lint demo cluster-demo docs bench services services-stop clean dashboard

# The venv, and the compiled build of the HTTP fast path (setup.py, bizzyd/http/build.py),
# rebuilt here whenever one of its sources is newer.
venv: $(STAMP)
	@$(PY) -W ignore setup.py -q build_ext --inplace

$(STAMP): pyproject.toml setup.py
	scripts/install-deps build
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

# The Hive Analytics Dashboard (modules/dashboard, docs/dashboard.md): its npm
# dependencies (pinned by package-lock.json, installed with `npm ci`) and the esbuild
# bundle in modules/dashboard/web/dist/, rebuilt when a source or the lock file changes.
WEB := modules/dashboard/web
WEB_MODULES := $(WEB)/node_modules/.installed
WEB_SOURCES := $(WEB)/build.mjs $(wildcard $(WEB)/src/*.* $(WEB)/src/*/*.*)
dashboard: $(WEB)/dist/index.html

$(WEB_MODULES): $(WEB)/package.json $(WEB)/package-lock.json
	scripts/install-deps node
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(WEB)/dist/index.html: $(WEB_MODULES) $(WEB_SOURCES)
	cd $(WEB) && node build.mjs

test: venv deps lint dashboard
	BIZZYD_PG_FAST=1 scripts/services start
	eval "$$(scripts/services env)" && $(PY) -m pytest -q
	@echo "== the HTTP suites again, on the plain-Python build of the fast path =="
	BIZZYD_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider tests/http

# The demo: local services, schema, demo city (first time only; its history ends at the
# current hour, so the last day's charts have no gap), the dashboard's demo
# business user (every time: the emulator forgets its users), then scripts/demo:
# bizzyd in the foreground on conf/demo.yaml, logging to the terminal, and the sensor
# simulator (bizzyd-sim) in the background, logging to logs/demo-sim.log. Ctrl-C stops
# both. Extra simulator flags: make demo DEMO_SIM_ARGS='--rate 40'.
DEMO := $(VENV)/bin/bizzyd -p . -c conf/demo.yaml
demo: venv dashboard
	scripts/install-deps test
	scripts/services start
	eval "$$(scripts/services env)" && $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" migrate up
	eval "$$(scripts/services env)" && $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" \
		-g "firebase: {project_id: $$BIZZYD_FIREBASE_PROJECT, emulator: '$$BIZZYD_FIREBASE_EMULATOR'}" \
		demo-data --if-empty --hives 2000 --seed 1 --now "$(DEMO_NOW)" --business-user
	DEMO_SIM_ARGS="$(DEMO_SIM_ARGS)" exec scripts/demo

# The cluster on one host (docs/cluster.md): Postgres and a streaming standby, a 3-node
# RabbitMQ cluster, 2 memcached, the demo city, then scripts/cluster-demo: 3 bizzyd nodes behind HAProxy and
# the simulator publishing to every broker node. Ctrl-C stops the nodes, HAProxy and the
# simulator (`make services-stop` stops the services).
cluster-demo: venv
	scripts/install-deps cluster
	scripts/services start postgres postgres-standby memcached-pool rabbitmq-cluster
	eval "$$(scripts/services env)" && $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" migrate up
	eval "$$(scripts/services env)" && $(DEMO) -g "database: {dsn: '$$BIZZYD_PG_DSN'}" \
		demo-data --if-empty --hives 2000 --seed 1 --now "$(DEMO_NOW)"
	exec scripts/cluster-demo

clean:
	rm -rf $(VENV) run logs .pytest_cache .ruff_cache $(WEB)/node_modules $(WEB)/dist

docs: venv
	$(PY) -m bizzyd.config.docs > docs/config.md

# Benchmarks: loopback HTTP (bizzyd vs the bare uvloop+httptools server, uvicorn and
# nginx with wrk; see bench/README.md), idle connections (bench-idle), then the
# occupancy endpoint (bench-occupancy) and MQTT ingest (bench-ingest).
# Extra flags: make bench BENCH_ARGS='--duration 5 --workers 1'
BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-deps
bench-deps: venv
	scripts/install-deps bench
	$(VENV)/bin/pip install -q -r bench/requirements.txt

bench: bench-deps
	$(PY) bench/http_bench.py $(BENCH_ARGS)
	$(MAKE) bench-idle
	$(MAKE) bench-occupancy
	$(MAKE) bench-ingest
	$(MAKE) bench-queue
	$(MAKE) bench-catalogue
	$(MAKE) bench-users
	$(MAKE) bench-notifier
	$(MAKE) bench-analytics
	$(MAKE) bench-insights

# 10,000 idle keep-alive connections on one worker: its RSS, and a fresh client's p99
# meanwhile (bench/idle_bench.py). Appends a section to RESULTS.md.
IDLE_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-idle
bench-idle: venv
	$(PY) bench/idle_bench.py $(IDLE_BENCH_ARGS)

# GET /v1/hives/{id}/occupancy vs a `return 200` location of the same bizzyd (wrk;
# target: at least 0.8 of its requests/s). Appends a section to RESULTS.md.
OCCUPANCY_BENCH_ARGS ?= --rounds 3 --duration 8 --markdown bench/RESULTS.md
.PHONY: bench-occupancy
bench-occupancy: bench-deps
	scripts/services start
	eval "$$(scripts/services env)" && $(PY) bench/occupancy_bench.py $(OCCUPANCY_BENCH_ARGS)

# MQTT ingest benchmark (publish -> commit -> occupancy zone vs a bare paho subscriber,
# on the local services; see bench/ingest_bench.py). Appends a section to RESULTS.md.
INGEST_BENCH_ARGS ?= --markdown bench/RESULTS.md
# Queue benchmark: send + receive + delete in batches of 10, 4 producers + 4 consumers,
# through the SQS endpoint vs a plain SKIP LOCKED script (bench/queue_bench.py).
QUEUE_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-queue
bench-queue: venv
	scripts/services start
	eval "$$(scripts/services env)" && $(PY) bench/queue_bench.py $(QUEUE_BENCH_ARGS)

# The notifier at scale (bench/notifier_bench.py): 100,000 alert settings over the demo
# city with the simulator running, p99 from a crossing to the (fake) FCM call, the
# notifier's CPU. Appends a section to RESULTS.md.
NOTIFIER_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-notifier
bench-notifier: venv
	scripts/services start
	eval "$$(scripts/services env)" && $(PY) bench/notifier_bench.py $(NOTIFIER_BENCH_ARGS)

.PHONY: bench-ingest
bench-ingest: venv
	scripts/services start
	eval "$$(scripts/services env)" && $(PY) bench/ingest_bench.py $(INGEST_BENCH_ARGS)

# The catalogue API (bench/catalogue_bench.py): GET /v1/hives/{id} from the cache vs
# `return 200` and vs a FastAPI+uvicorn peer (bench/peers/), the near search on 10,000
# hives with its EXPLAIN, and memcached down. Appends a section to RESULTS.md.
CATALOGUE_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-catalogue
bench-catalogue: bench-deps
	scripts/services start
	eval "$$(scripts/services env)" && $(PY) bench/catalogue_bench.py $(CATALOGUE_BENCH_ARGS)
# Signed-in GET /v1/me (token cache warm) vs the anonymous cached hive read: worker CPU
# per request (goal <= 1.5x; bench/users_bench.py). Appends a section to RESULTS.md.
USERS_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-users
bench-users: bench-deps
	scripts/services start postgres memcached
	eval "$$(scripts/services env)" && $(PY) bench/users_bench.py $(USERS_BENCH_ARGS)
# One year of occupancy history (bench/analytics_bench.py): GET .../occupancy/history
# with bucket=1h and 1d over a year of rollups (demo-data --days 365), vs a FastAPI+uvicorn
# peer doing the same work; then the ingest's rollup write per batch against the
# hourly-only write before migration 0009 (bench/rollup_bench.py). Appends to RESULTS.md.
ANALYTICS_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-analytics
bench-analytics: bench-deps
	scripts/services start postgres memcached
	eval "$$(scripts/services env)" && $(PY) bench/analytics_bench.py $(ANALYTICS_BENCH_ARGS)
	eval "$$(scripts/services env)" && $(PY) bench/rollup_bench.py $(ANALYTICS_BENCH_ARGS)
# The insights jobs over 2,000 hives x 8 weeks of rollups (target: the profile in under
# a minute) and the forecast's error against the demo simulator (bench/insights_bench.py).
INSIGHTS_BENCH_ARGS ?= --markdown bench/RESULTS.md
.PHONY: bench-insights
bench-insights: venv
	scripts/services start postgres
	eval "$$(scripts/services env)" && $(PY) bench/insights_bench.py $(INSIGHTS_BENCH_ARGS)
