# Entry points. `make run` and `make test` are all a fresh machine needs (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run serve test lint fmt typecheck services services-stop services-env bench clean

install: $(STAMP)

# Reinstall whenever the dependency ranges or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo --if-empty --credentials .demo/credentials.json
	$(PY) manage.py train_model --if-none
	PORT=$(PORT) bash scripts/serve.sh

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: install
	$(VENV)/bin/mypy .

# Local PostgreSQL and Redis under .services/ (the same services docker-compose.yml describes).
services:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

services-env:
	@bash scripts/services.sh env

# All benchmarks on PostgreSQL (see docs/benchmarks.md); BENCH_ARGS=--quick for a short run.
bench: install
	bash scripts/bench.sh

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache
