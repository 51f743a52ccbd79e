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

.PHONY: setup test book notebooks lint bench mutate clean

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

# every chapter as an .ipynb in the ignored _build/notebooks, for papermill (which cannot read the .py sources):
#   .venv/bin/papermill _build/notebooks/06_training.ipynb out.ipynb -p profile gpu
notebooks: setup
	@mkdir -p _build/notebooks
	@for f in notebooks/*.py; do \
		$(VENV)/bin/jupytext --quiet --to ipynb -o _build/notebooks/$$(basename $$f .py).ipynb $$f || exit 1; \
	done
	@echo "wrote _build/notebooks/*.ipynb; run one with: $(VENV)/bin/papermill _build/notebooks/<name>.ipynb out.ipynb -p profile $(PROFILE)"

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m benchmarks

# hand-made bugs (tools/mutations.txt) applied one at a time to a copy of the package; lists survivors.
# Not part of `make test` or CI: slow by nature, a habit for whoever touches a paper constant.
mutate: setup
	$(PY) tools/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf _build
