# The one entry point for people and CI. Every target bootstraps what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU torch wheel lies here on these machines; elsewhere pip uses its index.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2
MODELGATE := $(VENV)/bin/modelgate

.PHONY: help venv models os-deps run up down status serve test test-faults lint fmt clean bench

help:
	@echo "make run    - the native stack in the foreground: gateway on http://127.0.0.1:8080"
	@echo "              (redis, 3 replicas, nginx, prometheus); Ctrl-C stops it all"
	@echo "make up     - the same in the background; make status, make down"
	@echo "make serve  - one replica alone on http://$(HOST):$(PORT)"
	@echo "make test   - lint, type-check and run every test tier"
	@echo "make test-faults - F1-F13 against a real stack under load; writes"
	@echo "              tests/faults/RESULTS.md (about 15 minutes; FAULTS_SOAK_S=600 for a full soak)"
	@echo "make models - (re)build the demo model repository in models/"
	@echo "make bench  - every benchmark scenario; writes bench/RESULTS.md (about 20 minutes)"

$(STAMP): services/api/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(FIND_LINKS) -e 'services/api[dev]'
	touch $@

venv: $(STAMP)

# OS packages the stack and the tests run for real (apt-get, as root, only when missing).
os-deps:
	scripts/os-deps.sh redis-server nginx prometheus promtool \
		prometheus-nginx-exporter prometheus-redis-exporter wrk

models/.built: $(STAMP) scripts/build_models.py
	$(PY) scripts/build_models.py --out models
	touch $@

models: models/.built

run: models os-deps
	$(MODELGATE) stack up --model-repository models

up: models os-deps
	$(MODELGATE) stack up --detach --model-repository models

down: $(STAMP)
	$(MODELGATE) stack down

status: $(STAMP)
	$(MODELGATE) stack status

serve: models
	$(MODELGATE) serve --model-repository models --host $(HOST) --port $(PORT) --workers $(WORKERS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint models os-deps
	$(PY) -m pytest

# The fault suite (tests/faults/): collected only with MODELGATE_FAULTS=1. Durations:
# FAULTS_SOAK_S (F13, 180), FAULTS_OVERLOAD_S (F10, 30), FAULTS_KEEPALIVE_ROUNDS (F7, 1).
test-faults: models os-deps
	MODELGATE_FAULTS=1 $(PY) -m pytest tests/faults -v -p no:cacheprovider $(FAULTS_ARGS)

# Not part of `make test` (a smoke run of every scenario is). BENCH_ARGS=--seconds 30 …
bench: models os-deps
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	-test -x $(MODELGATE) && $(MODELGATE) stack down
	rm -rf models .stack .pytest_cache .mypy_cache .ruff_cache
