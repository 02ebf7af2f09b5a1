# The two commands a newcomer needs: `make serve` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= plugins.toml
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup serve test lint typecheck bench check clean

setup:
	@scripts/bootstrap.sh

serve: setup
	$(BIN)/sluiceway serve --config $(CONFIG) --host $(HOST) --port $(PORT)

check: setup
	$(BIN)/sluiceway check --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check core plugins tests benchmarks examples
	$(BIN)/mypy core

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info core/*.egg-info plugins/*/*.egg-info
