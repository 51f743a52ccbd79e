# The two commands of the README. Both set up .venv when needed and are quick when nothing changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
# torch first, pinned: on a CPU machine with a local wheel this never pulls a CUDA build
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= cpu
PYTEST_ARGS ?=
STAMP := $(VENV)/.moero-installed

.PHONY: setup test book lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -c constraints.txt -e ".[book,test,raw]"
	@touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

book: setup
	$(PY) -m moero book --profile $(PROFILE)

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf _build
