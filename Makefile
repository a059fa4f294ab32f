PYTHON ?= python3
PACKAGES = meshcore meshload loadgen meshsim analysis benchmarks

.PHONY: install test unit lint typecheck bench canary

install:
	$(PYTHON) -m pip install -e '.[dev]'

test:
	$(PYTHON) -m pytest -q

unit:
	$(PYTHON) -m pytest -q -m "not integration"

lint:
	$(PYTHON) -m ruff check $(PACKAGES) tests scenarios
	$(PYTHON) -m ruff format --check $(PACKAGES) tests scenarios

typecheck:
	$(PYTHON) -m mypy

bench:
	$(PYTHON) -m benchmarks
