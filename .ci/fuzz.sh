#!/usr/bin/env bash
# .ci/fuzz.sh [SECONDS] - build and run the libFuzzer target over the C core.
#
#   * needs clang and its libFuzzer runtime (libclang-rt-N-dev on Debian/Ubuntu):
#     without them a SKIP with a note (`make deps` installs them), or, under
#     CI=true, installed with apt-get (.ci/lib.sh missing_tool);
#   * builds csrc/fuzz/fuzz_header.c with -fsanitize=fuzzer,address,undefined
#     (UBSan findings abort, so they count as crashes);
#   * replays every file in csrc/fuzz/regressions/ (each one a past crash);
#   * writes the seed corpus (csrc/fuzz/make_seeds.py) and fuzzes for SECONDS
#     (default 60) with the header dictionary;
#   * exits non-zero on any crash, leak, timeout or sanitizer report.
#
# Environment: FUZZ_WORKDIR (default build/fuzz), FUZZ_JOBS (default 1),
# FUZZ_EXTRA (extra libFuzzer flags), FUZZ_CFLAGS (extra compiler flags, e.g.
# -fno-sanitize=pointer-overflow while a known finding is open), CC (default clang).
set -euo pipefail

SECONDS_TO_RUN="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${FUZZ_WORKDIR:-$ROOT/build/fuzz}"
JOBS="${FUZZ_JOBS:-1}"
CC="${CC:-clang}"

. "$ROOT/.ci/lib.sh"
if ! command -v "$CC" >/dev/null 2>&1; then
    missing_tool "$CC (libFuzzer)" clang || exit $?
    CC=clang
fi
# libFuzzer: libclang-rt-N-dev on Debian >= 12 (with clang itself on older releases)
FUZZER_LIB="$("$CC" -print-file-name="libclang_rt.fuzzer-$(uname -m).a")"
if [ ! -e "$FUZZER_LIB" ] && [ ! -e "$("$CC" -print-file-name=libclang_rt.fuzzer.a)" ]; then
    ver="$(clang_major "$CC")"
    missing_tool "libFuzzer (clang's runtime)" "libclang-rt-${ver}-dev" || exit $?
fi

mkdir -p "$WORK/corpus" "$WORK/artifacts"
BIN="$WORK/fuzz_header"

CORE_SRCS=()
for f in "$ROOT"/csrc/core/*.c; do CORE_SRCS+=("$f"); done

echo "fuzz.sh: building $BIN"
"$CC" -std=c11 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined ${FUZZ_CFLAGS:-} -fno-sanitize-recover=all \
    -I"$ROOT/csrc/core" \
    "$ROOT/csrc/fuzz/fuzz_header.c" "${CORE_SRCS[@]}" -o "$BIN"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# 1. regressions: every past crash must now pass
REG="$ROOT/csrc/fuzz/regressions"
if [ -d "$REG" ] && [ -n "$(ls -A "$REG" 2>/dev/null)" ]; then
    echo "fuzz.sh: replaying $(ls "$REG" | wc -l) regression inputs"
    "$BIN" -runs=0 "$REG"/* >"$WORK/regressions.log" 2>&1 || {
        cat "$WORK/regressions.log" >&2
        echo "fuzz.sh: a regression input fails" >&2
        exit 1
    }
fi

# 2. seeds
python3 "$ROOT/csrc/fuzz/make_seeds.py" "$WORK/seeds"

# 3. fuzz
echo "fuzz.sh: fuzzing for ${SECONDS_TO_RUN}s"
PAR=()
if [ "$JOBS" != 1 ]; then PAR=(-jobs="$JOBS" -workers="$JOBS"); fi
set +e
# shellcheck disable=SC2086
"$BIN" "$WORK/corpus" "$WORK/seeds" \
    -dict="$ROOT/csrc/fuzz/header.dict" \
    -max_total_time="$SECONDS_TO_RUN" \
    -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    "${PAR[@]}" \
    -artifact_prefix="$WORK/artifacts/" \
    -print_final_stats=1 ${FUZZ_EXTRA:-} 2>&1 | tee "$WORK/fuzz.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$JOBS" != 1 ]; then cat "$WORK"/fuzz-*.log >>"$WORK/fuzz.log" 2>/dev/null || true; fi

grep -E "^stat::|#[0-9]+.*DONE" "$WORK/fuzz.log" | tail -8 || true
if [ "$rc" != 0 ] || ls "$WORK"/artifacts/crash-* "$WORK"/artifacts/leak-* \
        "$WORK"/artifacts/timeout-* "$WORK"/artifacts/oom-* >/dev/null 2>&1; then
    echo "fuzz.sh: FAILED (rc=$rc); artifacts in $WORK/artifacts:" >&2
    ls -la "$WORK/artifacts" >&2
    echo "Add each crashing input to csrc/fuzz/regressions/ once fixed." >&2
    exit 1
fi
echo "fuzz.sh: OK"
