# Two entry points for a fresh machine (see README): `make demo` (the main job) and `make test`.
# Both create .venv and install the project into it first; nothing needs installing by hand.

PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 lies on local disk on the project's machines; elsewhere pip fetches it.
# Override for another build, e.g. `make test TORCH=torch==2.13.0+cu126 PIP_EXTRA=--index-url=...`.
TORCH ?= torch==2.13.0
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.cxr-monai-installed

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_EXTRA) "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_EXTRA) -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m cxr_monai demo --out $(DEMO_DIR)

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
