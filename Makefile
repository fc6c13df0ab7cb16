# Entry points (see README): `make test` runs everything CI runs, `make bench`
# runs the benchmark against upstream on generated checkpoints. Both set up
# their own virtualenv, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := "torch==2.13.0" numpy ml_dtypes pytest hypothesis setuptools wheel

.PHONY: venv build test test-c test-py test-sanitize test-frameworks fuzz bench bench-guard clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(DEPS)
	touch $@

venv: $(VENV)/.deps

build: venv
	$(PY) -m pip install -q --no-build-isolation -e .

test-c:
	$(MAKE) -C csrc test

test-py: build
	$(PY) -m pytest -q -x tests

# TensorFlow, paddle, MLX and JAX for real, each in its own venv and process.
test-frameworks: build
	.ci/frameworks.sh

test-sanitize: venv
	VENV=$(VENV) .ci/sanitize.sh

fuzz:
	.ci/fuzz.sh 60

bench-guard: build
	$(PY) bench/guard.py

test: test-c test-py fuzz test-sanitize

bench: build
	$(PY) -m pip install -q matplotlib
	$(PY) bench/run.py

clean:
	rm -rf build csrc/build safetensors/*.so *.egg-info

.PHONY: lib install
lib install:   # the C core as libsafetensors-c; install takes PREFIX=... (csrc/Makefile)
	$(MAKE) -C csrc $@
