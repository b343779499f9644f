# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYNID_HOME ?= $(CURDIR)/data
DAGSTER_HOME ?= $(SYNID_HOME)/dagster
HOST ?= 127.0.0.1
PORT ?= 3000
IDENTITIES ?= 32
LIVE ?= 2
export SYNID_HOME DAGSTER_HOME

.PHONY: venv demo test ui lint benchmark calibrate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/synid demo --identities $(IDENTITIES) --live $(LIVE)

test: venv
	$(BIN)/ruff check synid_assets tests benchmarks
	$(BIN)/python -m pytest -q

ui: venv
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check synid_assets tests benchmarks

benchmark: venv
	$(BIN)/python benchmarks/renderer_quality.py --identities 192 --live 1

calibrate: venv
	$(BIN)/synid thresholds calibrate-local --write resources/local.yaml

clean:
	rm -rf $(SYNID_HOME)
