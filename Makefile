# Two-command quickstart: `make train` and `make test` each set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-all lint docs docs-build clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,launchers,sweepers,docs]"
	touch $(STAMP)

train: setup
	$(PY) train.py $(ARGS)

# The fast suite (tests marked `slow` left out, see pyproject.toml), on two workers (a test
# file to each in turn, so its module fixtures are made once); under 4 minutes on 2 cores.
test: setup
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

# Every test: learning runs, launchers, SIGKILL and long fault tests too (what CI runs), one at
# a time: the fault tests time signals and the launchers start their own workers.
test-all: setup
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: setup
	$(PY) -m ruff check procmem tests benchmarks train.py evaluate.py

# The documentation site (mkdocs.yml): served at http://127.0.0.1:8000 and rebuilt on change;
# docs-build builds it into build/site and fails on any warning (a broken link, say).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve $(ARGS)

docs-build: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict $(ARGS)

clean:
	rm -rf $(VENV) outputs
