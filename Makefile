# Each target installs what it needs into .venv, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast reproduce bench bench-gpu docs install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m gflow demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadscope -q --durations=15

reproduce: $(STAMP)
	$(PY) -m gflow reproduce all --out reproduce_out

# Benchmark peers (torch CPU wheel, torchdiffeq, scipy): installed here, never by `make test`.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m gflow bench all --small --peers

BENCH_OUT ?= bench_gpu_out
bench-gpu: $(BENCH_STAMP)
	$(PY) -m gflow bench all --full --peers --out $(BENCH_OUT)

# The documentation site (mkdocs + mkdocstrings, from the docstrings): never needed by `make test`.
# --strict: any warning (a broken link, an unresolvable name in __all__) fails the build.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) reproduce_out demo_*.png site
