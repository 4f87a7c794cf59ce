# Each target installs what it needs into .venv, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast reproduce bench install clean

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
	$(PY) -m pytest -n 2 -q --durations=15

reproduce: $(STAMP)
	$(PY) -m gflow reproduce all --out reproduce_out

bench: $(STAMP)
	$(PY) -m gflow bench

clean:
	rm -rf $(VENV) reproduce_out demo_*.png
