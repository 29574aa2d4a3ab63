# Two commands for a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint install services

$(BIN)/session-sync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/session-sync

## run: the server on the embedded default (SQLite in ./data, in-process broker, codes in the log)
run: install
	$(BIN)/session-sync serve --host 127.0.0.1 --port 8000

## lint: ruff and mypy (strict)
lint: install
	$(BIN)/ruff check server client_sdk migrations tests bench
	$(BIN)/ruff format --check server client_sdk migrations tests bench
	$(BIN)/mypy

## services: make sure Postgres and Redis answer, starting local ones if they are stopped
services:
	bash scripts/ensure-services.sh

## test: lint, then the whole suite against real Postgres, Redis and SMTP (see tests/README.md)
test: lint services
	$(BIN)/pytest $(PYTEST_ARGS)
