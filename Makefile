# The one entry point for people and CI. Every target bootstraps what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# One lock, pinned with hashes, for this venv and the api image (services/api/Dockerfile).
LOCK := services/api/requirements.lock
# torch's CPU wheel (`2.13.0+cpu` in the lock) lies in /opt/wheels on these machines;
# elsewhere it comes from PyTorch's CPU index, as in the image. The hashes decide either way.
TORCH_WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2
MODELGATE := $(VENV)/bin/modelgate
# locust in a venv of its own (bench/locust.in says why), pinned with hashes.
LOCUST_LOCK := bench/locust.lock
LOCUST_STAMP := .venv-locust/.installed-stamp

.PHONY: help venv lock models os-deps run up down status serve test test-faults lint fmt clean bench load

help:
	@echo "make run    - the native stack in the foreground: gateway on http://127.0.0.1:8080"
	@echo "              (redis, 3 replicas, nginx, alertmanager, prometheus); Ctrl-C stops it all"
	@echo "make up     - the same in the background; make status, make down"
	@echo "make serve  - one replica alone on http://$(HOST):$(PORT)"
	@echo "make test   - lint, type-check and run every test tier"
	@echo "make test-faults - F1-F13 against a real stack under load; writes"
	@echo "              tests/faults/RESULTS.md (about 15 minutes; FAULTS_SOAK_S=600 for a full soak)"
	@echo "make models - (re)build the demo model repository in models/"
	@echo "make bench  - every benchmark scenario; writes bench/RESULTS.md (about 20 minutes)"
	@echo "make load   - locust against the running gateway (LOAD_HOST, LOAD_USERS, LOAD_TIME);"
	@echo "              CSV and HTML report in bench/out/"

$(STAMP): services/api/pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps $(TORCH_WHEELS) -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e services/api
	touch $@

venv: $(STAMP)

# Re-pin after editing services/api/pyproject.toml, bench/locust.in or
# tests/tools/mlflow-server.in (pip-tools in a throwaway venv).
lock:
	test -x .venv-lock/bin/pip-compile || \
		(python3 -m venv .venv-lock && .venv-lock/bin/pip install --quiet pip-tools==7.6.2)
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--extra dev --no-emit-find-links --no-emit-index-url $(TORCH_WHEELS) \
		-o $(LOCK) services/api/pyproject.toml
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-find-links --no-emit-index-url -o $(LOCUST_LOCK) bench/locust.in
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-find-links --no-emit-index-url -o $(MLFLOW_LOCK) tests/tools/mlflow-server.in

# OS packages the stack and the tests run for real (apt-get, as root, only when missing).
os-deps:
	scripts/os-deps.sh redis-server nginx prometheus promtool \
		prometheus-nginx-exporter prometheus-redis-exporter wrk \
		prometheus-alertmanager amtool

models/.built: $(STAMP) scripts/build_models.py scripts/build_ranker.py
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

# The MLflow tracking server the registry tests start: a server we test against, in a
# venv of its own (tests/tools/mlflow-server.in says why), pinned with hashes.
MLFLOW_LOCK := tests/tools/mlflow-server.lock
MLFLOW_STAMP := .venv-mlflow/.installed-stamp
$(MLFLOW_STAMP): $(MLFLOW_LOCK)
	test -x .venv-mlflow/bin/python || python3 -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet --require-hashes -r $(MLFLOW_LOCK)
	touch $@

test: lint models os-deps $(MLFLOW_STAMP) $(LOCUST_STAMP)
	$(PY) -m pytest

# The fault suite (tests/faults/): collected only with MODELGATE_FAULTS=1. Durations:
# FAULTS_SOAK_S (F13, 180), FAULTS_OVERLOAD_S (F10, 30), FAULTS_KEEPALIVE_ROUNDS (F7, 1).
test-faults: models os-deps
	MODELGATE_FAULTS=1 $(PY) -m pytest tests/faults -v -p no:cacheprovider $(FAULTS_ARGS)

# Not part of `make test` (a smoke run of every scenario is). BENCH_ARGS=--seconds 30 …
bench: models os-deps
	$(PY) bench/run.py $(BENCH_ARGS)

$(LOCUST_STAMP): $(LOCUST_LOCK)
	test -x .venv-locust/bin/python || python3 -m venv .venv-locust
	.venv-locust/bin/python -m pip install --quiet --require-hashes -r $(LOCUST_LOCK)
	touch $@

# Bounded and headless: a run ends by itself after LOAD_TIME. bench/out/load_stats.csv
# (per route), load_stats_history.csv (over time), load_failures.csv, load.html.
LOAD_HOST ?= http://127.0.0.1:8080
LOAD_USERS ?= 20
LOAD_SPAWN_RATE ?= 10
LOAD_TIME ?= 60s
LOAD_OUT ?= bench/out
load: $(LOCUST_STAMP)
	mkdir -p $(LOAD_OUT)
	.venv-locust/bin/locust -f bench/locustfile.py --headless --host $(LOAD_HOST) \
		--users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) --run-time $(LOAD_TIME) \
		--stop-timeout 5 --csv $(LOAD_OUT)/load --csv-full-history \
		--html $(LOAD_OUT)/load.html --only-summary

clean:
	-test -x $(MODELGATE) && $(MODELGATE) stack down
	rm -rf models .stack .pytest_cache .mypy_cache .ruff_cache
