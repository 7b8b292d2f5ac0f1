# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-slow demo clean

setup: $(VENV)/.installed

# torch is pinned first: a bare `torch` requirement would pull the newest CUDA build (several GB).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,web]'
	touch $@

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(VENV)/bin/yofo demo --out demo_out

clean:
	rm -rf $(VENV) demo_out .pytest_cache
