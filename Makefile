# The two commands a newcomer needs: `make serve` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= plugins.toml
# HOST/PORT override [server] host/port from the config when set: `make serve PORT=9000`.
HOST ?=
PORT ?=

.PHONY: setup setup-serve serve test lint typecheck bench check clean

setup:
	@scripts/bootstrap.sh

# Serving needs only the Python packages (and Chromium if the configuration uses
# web logins); the suite needs everything.
setup-serve:
	@scripts/bootstrap.sh serve $(wildcard $(CONFIG))

serve: setup-serve
	$(BIN)/sluiceway serve --config $(CONFIG) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

check: setup-serve
	$(BIN)/sluiceway check --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check core plugins tests benchmarks examples
	$(BIN)/mypy core
	@# The editable installs map core/ to `sluiceway` (and each plugin to its package) in
	@# a way mypy cannot follow from the plugins; links give it each under its import name.
	@mkdir -p build/mypy-path && ln -sfn ../../core build/mypy-path/sluiceway
	@for p in $(filter-out %.egg-info,$(wildcard plugins/*/sluiceway_*)); do ln -sfn ../../$$p build/mypy-path/$$(basename $$p); done
	MYPYPATH=build/mypy-path $(BIN)/mypy --strict $(filter-out %.egg-info,$(wildcard plugins/*/sluiceway_*))

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info core/*.egg-info plugins/*/*.egg-info
