# The two commands: `make run` (the zoo on bundled data) and `make test`.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PROFILE ?= quick
PYTEST_ARGS ?=
LOAD_ARGS ?=

.PHONY: help venv run test lint ui smoke bench load clean

help:
	@echo "make run    - set up .venv and run the zoo through Airflow + MLflow (PROFILE=$(PROFILE))"
	@echo "make test   - set up .venv and run the test suite (what CI runs)"
	@echo "make ui     - Airflow UI on :8080 and MLflow UI on :5000, same stores"
	@echo "make lint   - ruff (AIR rules on dags/)"
	@echo "make bench  - benchmarks under bench/ (all but the load test)"
	@echo "make load   - 16 concurrent smoke runs on the distributed stack, with faults (LOAD_ARGS=...)"
	@echo "make clean  - delete var/ (stores, data, logs); keeps .venv"

venv:
	@bash scripts/bootstrap.sh

run: venv
	@$(VENV)/bin/nnzoo zoo --profile $(PROFILE)

test: venv
	@bash scripts/test.sh $(PYTEST_ARGS)

lint: venv
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff check --select AIR3 dags/

ui: venv
	@$(VENV)/bin/nnzoo ui

bench: venv
	@for b in bench/*.py; do [ "$$b" = bench/load.py ] && continue; echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

load: venv
	@bash scripts/start_services.sh && $(VENV)/bin/python bench/load.py $(LOAD_ARGS)

clean:
	rm -rf var
