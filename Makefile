# Two entry points for a fresh machine (see README): `make demo` (the main job) and `make test`.
# Both create .venv and install the project into it first; nothing needs installing by hand.

PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 lies on local disk on the project's machines; elsewhere pip fetches it.
# Override for another build, e.g. `make test TORCH=torch==2.13.0+cu126 PIP_EXTRA=--index-url=...`.
TORCH ?= torch==2.13.0
# torchvision (the `detection` extra: bundles/localisation's Faster R-CNN), the release paired with TORCH. The index
# serves only CUDA builds of it, which a CPU torch cannot load; the project's machines keep a CPU build of it in
# WHEELS, used when that folder exists (elsewhere the index's build, which matches the index's torch).
TORCHVISION ?= torchvision==0.28.0
WHEELS ?= ../shared/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)/*.whl),--find-links $(WHEELS))
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.cxr-monai-installed

.PHONY: install test demo bench clean browser

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_EXTRA) $(FIND_LINKS) "$(TORCH)" "$(TORCHVISION)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_EXTRA) $(FIND_LINKS) -e ".[test,detection]"
	touch $(STAMP)

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's Chromium and ChromeDriver for the observer study's browser tests, installed when missing and this is a
# Debian machine run as root; elsewhere the browser tests skip and say why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			>/dev/null 2>&1 || echo "could not install chromium: the browser tests will skip"; \
	else echo "no chromium/chromedriver and no root apt-get: the browser tests will skip"; fi

demo: $(STAMP)
	$(BIN)/python -m cxr_monai demo --out $(DEMO_DIR)

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
