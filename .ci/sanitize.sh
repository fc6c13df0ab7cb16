#!/usr/bin/env bash
# .ci/sanitize.sh [PYTEST_ARGS...] - the whole pytest suite against an
# ASan + UBSan build of the extension, then again under LeakSanitizer.
#
#   1. builds safetensors/_safetensors_c*.so in place with
#      SAFETENSORS_SANITIZE=1 (-fsanitize=address,undefined,
#      -fno-sanitize-recover=undefined) using the venv's python;
#   2. pass 1: pytest with LD_PRELOAD=<gcc's libasan.so>, detect_leaks=0;
#   3. pass 2: the same with detect_leaks=1 and csrc/fuzz/lsan.supp, which
#      suppresses leaks that belong to CPython / NumPy / PyTorch, never ours;
#      the leak check runs in the pytest process (the processes tests start
#      run under ASan without it), and a pass whose only report is LSan's own
#      tracer crashing runs once more;
#   4. rebuilds the normal (unsanitized) extension in place on exit, so the
#      tree is usable without LD_PRELOAD afterwards (SANITIZE_KEEP=1 skips).
#
# Why LD_PRELOAD: python itself is not built with ASan, so the ASan runtime
# must be loaded before anything else; gcc's libasan (the extension is built
# by gcc through setuptools) is the one that matches the build.
# PYTHONMALLOC=malloc makes every Python object a malloc block, so ASan sees
# overflows and use-after-free of objects, not only of our raw buffers.
#
# Without gcc's libasan: a SKIP with a note (`make deps` installs gcc), or, under
# CI=true, installed with apt-get. pytest's temporary files: build/tmp/sanitize.
#
# Environment: VENV (default .venv), SANITIZE_PASSES ("asan lsan" by default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
PASSES="${SANITIZE_PASSES:-asan lsan}"

if [ ! -x "$PY" ]; then
    echo "sanitize.sh: no python at $PY (run 'make venv' first or set VENV)" >&2
    exit 2
fi

. .ci/lib.sh
build_tmp sanitize
# gcc with its sanitizer runtimes (Debian: libasan8 / libubsan1 come with gcc)
LIBASAN="$(gcc -print-file-name=libasan.so 2>/dev/null || true)"
if [ "${LIBASAN#/}" = "$LIBASAN" ] || [ ! -e "$LIBASAN" ]; then
    missing_tool "gcc's libasan" gcc libc6-dev || exit $?
    LIBASAN="$(gcc -print-file-name=libasan.so)"
fi
LIBASAN="$(readlink -f "$LIBASAN")"
# libstdc++ must be loaded when the ASan runtime initialises: python does not
# link it, and without it ASan cannot resolve the real __cxa_throw, so the
# first C++ exception PyTorch throws (e.g. an IndexError from tensor
# indexing) dies in "CHECK failed: asan_interceptors.cpp ... real___cxa_throw".
LIBSTDCXX="$(readlink -f "$(gcc -print-file-name=libstdc++.so)")"
PRELOAD="$LIBASAN $LIBSTDCXX"
echo "sanitize.sh: LD_PRELOAD=$PRELOAD"

rebuild_normal() {
    if [ "${SANITIZE_KEEP:-0}" != 1 ]; then
        echo "sanitize.sh: rebuilding the normal extension"
        env -u SAFETENSORS_SANITIZE "$PY" setup.py -q build_ext --inplace --force >/dev/null 2>&1 ||
            echo "sanitize.sh: WARNING: normal rebuild failed" >&2
    fi
}
trap rebuild_normal EXIT

echo "sanitize.sh: building the sanitized extension"
SAFETENSORS_SANITIZE=1 "$PY" setup.py -q build_ext --inplace --force

# Options shared by both passes.
#  - verify_asan_link_order=0: torch's and numpy's extension modules are not
#    instrumented; ASan otherwise insists on being first in *their* DT_NEEDED.
#  - detect_odr_violation=0: torch ships some globals in two shared objects.
#  - allocator_may_return_null=1: tests that ask for absurd sizes expect
#    MemoryError / a clean error, not an ASan abort.
#  - handle_sigbus=0: a test documents SIGBUS under a truncated mapping in a
#    subprocess; the signal must reach the child as a signal.
#  - abort_on_error=0 / halt_on_error=1: a report ends the process with exit
#    code 1 after printing it.
COMMON="verify_asan_link_order=0:detect_odr_violation=0:allocator_may_return_null=1"
COMMON="$COMMON:handle_sigbus=0:halt_on_error=1:strict_string_checks=1"
COMMON="$COMMON:detect_stack_use_after_return=0:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc
export PYTHONFAULTHANDLER=1

# A report that is nothing but LeakSanitizer's own tracer crashing at exit
# ("Tracer caught signal 11 ... LeakSanitizer has encountered a fatal
# error", google/sanitizers#1353) says nothing about our code: LSan could not
# stop the process's threads to look. Every other report is a finding.
only_tracer_crashes() {
    local f
    for f in "$1"/*; do
        grep -q "LeakSanitizer has encountered a fatal error" "$f" || return 1
        if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer: detected)|runtime error:" "$f"; then
            return 1
        fi
    done
}

# run_pass NAME ASAN_OPTIONS [PYTEST_ARGS...]: 0 clean, 1 findings or failed
# tests, 3 failed only because LSan's tracer crashed.
run_pass() {
    local name="$1" opts="$2"
    shift 2
    echo "sanitize.sh: pass '$name' (ASAN_OPTIONS=$opts)"
    local log="build/sanitize-$name.log"
    # Reports go to files (one per process: <prefix>.<pid>): pytest captures
    # fd 2 during a test, so a report printed there would be lost with the
    # process it kills.
    local reports="$ROOT/build/sanitize-reports/$name"
    rm -rf "$reports"
    mkdir -p "$reports"
    set +e
    # The processes tests start run sanitized too, with leak checks off
    # (tests/conftest.py hands them SANITIZE_CHILD_ASAN_OPTIONS).
    LD_PRELOAD="$PRELOAD" ASAN_OPTIONS="$opts:log_path=$reports/asan" \
        SANITIZE_CHILD_ASAN_OPTIONS="$opts:detect_leaks=0:log_path=$reports/asan" \
        UBSAN_OPTIONS="$UBSAN_OPTIONS:log_path=$reports/ubsan" \
        LSAN_OPTIONS="${LSAN_OPTIONS_PASS:-}" \
        "$PY" -m pytest -q -rfE -p no:cacheprovider --basetemp="$BASETEMP" tests "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    set -e
    # allocator_may_return_null=1 makes an impossible allocation return NULL
    # (tests check the MemoryError a 909 TiB header gives) and log a warning:
    # a file of nothing but such warnings is not a finding.
    for f in "$reports"/*; do
        if [ -f "$f" ] && ! grep -qv "WARNING: AddressSanitizer failed to allocate" "$f"; then
            rm -f "$f"
        fi
    done
    if [ -n "$(ls -A "$reports")" ]; then
        for f in "$reports"/*; do
            echo "==== $f" >&2
            cat "$f" >&2
        done
        if only_tracer_crashes "$reports"; then
            echo "sanitize.sh: pass '$name': LeakSanitizer's tracer crashed (no finding)" >&2
            return 3
        fi
        echo "sanitize.sh: sanitizer report(s) in pass '$name' (above, and in $reports)" >&2
        return 1
    fi
    if [ "$rc" != 0 ]; then
        echo "sanitize.sh: pass '$name' failed with exit code $rc" >&2
        return 1
    fi
}

# A tracer crash gets the pass run once more; a second one fails it.
run_pass_once_more_on_tracer_crash() {
    local rc=0
    run_pass "$@" || rc=$?
    if [ "$rc" = 3 ]; then
        echo "sanitize.sh: running pass '$1' once more" >&2
        rc=0
        run_pass "$@" || rc=$?
    fi
    return "$rc"
}

for p in $PASSES; do
    case "$p" in
    asan)
        run_pass asan "$COMMON:detect_leaks=0" "$@"
        ;;
    lsan)
        LSAN_OPTIONS_PASS="suppressions=$ROOT/csrc/fuzz/lsan.supp:print_suppressions=0" \
            run_pass_once_more_on_tracer_crash lsan "$COMMON:detect_leaks=1" "$@"
        ;;
    *)
        echo "sanitize.sh: unknown pass $p" >&2
        exit 2
        ;;
    esac
done
echo "sanitize.sh: OK"
