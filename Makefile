# Two commands for a newcomer: `make demo` (offline demo build) and `make test` (the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo experiment test clean

setup: $(VENV)/.installed

# Pinned: requirements*.txt name what we use, constraints.txt locks everything beneath them.
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

demo: setup
	$(BIN)/openwit demo --output demo-out

# The CLIP paper in miniature, offline: build -> train a tiny CLIP -> zero-shot / linear probe -> overlap report.
experiment: setup
	$(BIN)/openwit experiment --output experiment-out

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo-out experiment-out *.egg-info
