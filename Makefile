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

.PHONY: venv services demo test test-faults ui lint benchmark benchmark-scale-out image calibrate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/synid demo --identities $(IDENTITIES) --live $(LIVE)

# PostgreSQL and Redis from Debian's packages, for the deployment and fault tests (deploy/).
services:
	@command -v redis-server >/dev/null && test -x /usr/lib/postgresql/15/bin/postgres || \
		{ $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q postgresql redis-server >/dev/null || \
		  $(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -q >/dev/null && apt-get install -y -q postgresql redis-server >/dev/null'; }

# The fast tests, fault tests included; `make test-faults` runs every fault test, the slow ones too.
test: venv services
	$(BIN)/ruff check synid_assets tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-faults: venv services
	$(BIN)/python -m pytest -q -m "fault"

ui: venv
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check synid_assets tests benchmarks

benchmark: venv
	$(BIN)/python benchmarks/renderer_quality.py --identities 192 --live 1

# Batches per hour with 1, 2 and 4 Celery workers, and the Celery and S3 deployments' per-step overhead.
benchmark-scale-out: venv services
	$(BIN)/python -m benchmarks.scale_out --batches 6 --workers 1,2,4

# The Kubernetes image (deploy/k8s): IMAGE=registry/synid:tag [TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128]
image:
	docker build -f deploy/k8s/Dockerfile -t $(IMAGE) $(if $(TORCH_INDEX_URL),--build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL)) .

calibrate: venv
	$(BIN)/synid thresholds calibrate-local --write resources/local.yaml

clean:
	rm -rf $(SYNID_HOME)
