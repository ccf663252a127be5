# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2
# Transparent huge pages for malloc: XLA's CPU backend allocates large fresh buffers each step,
# and a page fault per 4 KB page halved the align stage's speed (benchmarks/RESULTS.md).
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test test-slow test-all lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) train.py --config configs/synthetic.py --workdir $${WORKDIR:-runs/demo}

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The default run leaves out the tests marked slow (multi-process training, restarts after
# SIGKILL, notebooks, entry points); `make test-slow` runs those, `make test-all` both, as CI does.
test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS) -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) -m slow tests

test-all: test test-slow

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/bench_align.py

clean:
	rm -rf $(VENV) runs .pytest_cache
