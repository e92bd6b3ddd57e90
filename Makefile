# Quick start: `make demo` (the main job) and `make test` (the test suite). Both set up what they
# need on a fresh machine (scripts/install.sh: venv, torch, CUTLASS headers, build) first.
VENV ?= .venv
PY := $(VENV)/bin/python
WORLD ?= 4

.PHONY: install demo test clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m spava_ext demo --world-size $(WORLD)

test: install
	$(PY) -m pytest -q -rf tests

clean:
	rm -rf build python/spava_ext/*.so
