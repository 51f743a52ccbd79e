# The two commands of the README. Both set up .venv when needed and are quick when nothing changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
# torch first, pinned: on a CPU machine with a local wheel this never pulls a CUDA build
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= cpu
PYTEST_ARGS ?=
# pytest-xdist workers: the two long book builds of the suite run side by side (tests/conftest.py gives each worker
# and what it starts one thread, so 2 workers on 2 cores do not oversubscribe)
PYTEST_WORKERS ?= 2
STAMP := $(VENV)/.moero-installed

.PHONY: setup test test-fast book pdf notebooks lint bench mutate clean gpu-bundle

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -c constraints.txt -e ".[book,test,raw]"
	@touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# the tests not marked slow (no book builds, live chapters or multi-process end-to-end runs): the loop while editing
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

book: setup
	$(PY) -m moero book --profile $(PROFILE)

# the book as one PDF (_build/pdf/moero.pdf, also linked from the HTML): the single-page HTML printed by Chromium
pdf: setup
	$(PY) -m moero book --profile $(PROFILE) --pdf

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

# every benchmarks/bench_*.py at 1 torch thread, 7 interleaved pairs per ratio (BENCH_PAIRS), load average printed;
# e.g. make bench BENCH_ARGS="--threads 2 bench_physics"; `make test` runs each once at its smoke size (--smoke)
BENCH_ARGS ?=
bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

# hand-made bugs (tools/mutations.txt) applied one at a time to a copy of the package; lists survivors.
# Not part of `make test` or CI: slow by nature, a habit for whoever touches a paper constant.
mutate: setup
	$(PY) tools/mutate.py $(MUTATE_ARGS)

# gpu-bundle/ (ignored, <= 40 MiB): package, chapters, wheelhouse and run.sh for a GPU machine with no network.
#   gpu-bundle/run.sh OUT              on the GPU machine (about 9 minutes)
#   gpu-bundle/run.sh OUT --rehearse   the same path on CPU, training cut to a few steps (<= 15 minutes)
gpu-bundle:  # no .venv needed: the standard library, pip and git
	$(PYTHON) tools/gpu_bundle/build.py --out gpu-bundle

clean:
	rm -rf _build
