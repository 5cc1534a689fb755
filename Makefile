# Shelfwise — the targets a newcomer can guess. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
export SAM_CLI_TELEMETRY := 0
.DEFAULT_GOAL := help

# Python 3.12 (the Lambda runtime) where it exists, else python3 >= 3.11.
PYENV_312 := $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python3.12
PYTHON ?= $(shell for p in python3.12 $(PYENV_312) python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	    command -v $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.torch-installed
REQS := pyproject.toml requirements/lock.txt
BACKEND ?= moto
PYTEST := $(BIN)/python -m pytest

.PHONY: help setup torch lock demo test unit integration e2e lint format validate build bench train-image localstack localstack-stop clean

help:
	@echo "make demo      run the whole loop locally on the embedded AWS emulator (no AWS account)"
	@echo "make test      lint, validate the template, unit + integration/e2e on moto and LocalStack"
	@echo "make setup     create .venv with the pinned dependencies (done by demo and test)"
	@echo "make torch     add PyTorch from requirements/torch-lock.txt (the sequential model; done by test)"
	@echo "make lock      re-resolve pyproject.toml's dependencies into requirements/lock.txt and derive the rest"
	@echo "make e2e BACKEND=moto|localstack   integration + e2e suites against one emulator"
	@echo "make build     sam build every function and layer, print sizes against the budgets"
	@echo "make validate  sam validate --lint and cfn-lint on template.yaml"
	@echo "make bench     the benchmarks that print figures"
	@echo "make train-image STACK=shelfwise-dev   build the training image, push it to the stack's ECR, print its digest"

setup: $(STAMP)

$(STAMP): $(REQS)
	@test -n "$(PYTHON)" || { echo "make setup: need python3.12 or python3 >= 3.11" >&2; exit 1; }
	@echo "setup: using $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . || \
	  $(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Resolve pyproject.toml's dependencies into requirements/lock.txt (with hashes; versions already
# locked stay unless pyproject.toml needs others; `make lock UPGRADE=1` takes the newest allowed),
# then derive constraints.txt, train.txt, dev.txt and the layers' requirements from it.
lock: setup
	$(BIN)/pip-compile --quiet --all-extras --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) -o requirements/lock.txt pyproject.toml
	$(BIN)/python requirements/derive.py
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links -c requirements/constraints.txt -o requirements/torch-lock.txt requirements/torch.txt

# PyTorch trains the sequential model only, so it is its own step with its own lock: `make demo`
# stays light (`shelfwise demo --families sequential` needs it), `make test` installs it.
torch: $(TORCH_STAMP)

$(TORCH_STAMP): $(STAMP) requirements/torch-lock.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/torch-lock.txt
	@touch $(TORCH_STAMP)

demo: setup
	$(BIN)/shelfwise demo

test: setup torch lint validate unit
	$(MAKE) --no-print-directory e2e BACKEND=moto
	LOCALSTACK_OPTIONAL=1 bash infra/localstack/run-with.sh $(PYTEST) -p no:cacheprovider tests/integration tests/e2e
	$(MAKE) --no-print-directory build
	@echo "make test: all legs passed"

# Integration + e2e suites against one emulator: the embedded moto server (default), or a private
# LocalStack 4.14 in host mode (own venv, free port, own TMPDIR; stopped afterwards).
e2e: setup
ifeq ($(BACKEND),localstack)
	bash infra/localstack/run-with.sh $(PYTEST) -p no:cacheprovider tests/integration tests/e2e
else ifeq ($(BACKEND),moto)
	SHELFWISE_BACKEND=moto $(PYTEST) -p no:cacheprovider tests/integration tests/e2e
else
	@echo "make e2e: BACKEND must be moto or localstack, got '$(BACKEND)'" >&2; exit 2
endif

# A LocalStack for your own use on 127.0.0.1:4566 (state in .localstack/4566/); stop it by its pid.
localstack:
	bash infra/localstack/start.sh 4566

localstack-stop:
	bash infra/localstack/stop.sh 4566

unit: setup torch
	$(PYTEST) -m unit tests/unit

lint: setup
	$(BIN)/ruff check shared functions tests
	$(BIN)/ruff format --check shared functions tests
	$(BIN)/mypy
	$(BIN)/python requirements/derive.py --check

format: setup
	$(BIN)/ruff format shared functions tests
	$(BIN)/ruff check --fix shared functions tests

validate: setup
	$(BIN)/sam validate --lint --template template.yaml --region eu-west-1
	$(BIN)/cfn-lint template.yaml

# sam build needs python3.12 on PATH for the zip functions; the layers pick Lambda wheels with pip.
build: setup
	PATH="$(dir $(PYTHON)):$$PATH" PIP="$(abspath $(BIN))/python -m pip" $(BIN)/sam build --template template.yaml
	$(BIN)/python -m shelfwise_local.buildcheck --python "$(PYTHON)"

bench: setup
	$(BIN)/shelfwise bench ingest --rows 1000000

# Needs Docker and AWS credentials; prints the digest reference for the TrainingImageUri parameter.
STACK ?= shelfwise-dev
train-image: setup
	$(BIN)/python -m shelfwise_local.train_image --stack $(STACK) $(if $(REGION),--region $(REGION))

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .hypothesis .mypy_cache .ruff_cache
