# Two commands do all set-up on a fresh machine (README.md):
#   make demo   - create .venv, install, make synthetic videos, train + test
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt setup.py tools/install_deps.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) tools/install_deps.py -q
	touch $(STAMP)

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

clean-demo:
	rm -rf work_dirs/demo demo_data
