#!/usr/bin/env bash
# .ci/stage.sh - run one stage of `make test` or `make ci` and print one line about it.
#
#   .ci/stage.sh NAME CMD [ARGS...]   run CMD, its output going to build/logs/NAME.log
#   .ci/stage.sh --begin              forget the stages of an earlier run
#   .ci/stage.sh --end                print every stage, then the closing line
#                                     "N passed, N failed"; exit 1 if a stage failed
#
# A stage prints one line: its name, PASS / FAIL / SKIP, the test counts found
# in its log, and its seconds. The log is printed (its last STAGE_TAIL lines,
# default 80) only when the stage fails. Lines of the log that start with
# "note: " (say, "note: installing clang with apt-get") are printed under the
# stage line, so what a stage does to the machine is never silent.
#
# Counts: every pytest closing line in the log ("12 passed, 1 skipped in 3.4s")
# and every plain "N passed, N failed" line are added up. A failed stage whose
# log has no failure count counts as one failure, so the closing line never
# says "0 failed" after a failure.
#
# Exit status of CMD: 0 = PASS, 77 = SKIP (the stage could not run here and
# said why in a "note: " line), anything else = FAIL. .ci/stage.sh exits with
# CMD's status, or 0 when STAGE_KEEP_GOING=1 (`make test` and `make ci` set
# it, so one failed stage does not hide the results of the next ones).
#
# Temporary files: CMD runs with TMPDIR=build/tmp/NAME (pip, mktemp, Python's
# tempfile, pytest's default base directory), emptied before the stage and
# removed after it unless it failed (then its path is printed).
#
# Adding a stage is one line in the Makefile, under `test:` or `ci:`:
#     @$(STAGE) my-stage $(PY) -m pytest -q tests/test_mine.py
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${STAGE_LOGS:-$ROOT/build/logs}"
TABLE="$LOGS/stages.tsv"
mkdir -p "$LOGS"

# Sum the test counts of a log: prints "passed failed skipped".
count_tests() {
    awk '
    {
        line = $0
        gsub(/\033\[[0-9;]*m/, "", line)         # colour codes
        gsub(/^[= ]+|[= ]+$/, "", line)          # pytest -v frames it in "====="
        plain = (line ~ /^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$/)
        pytest = (line ~ /^[0-9]+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)(, [0-9]+ [a-z]+)* in [0-9.]+s( \([0-9:]+\))?$/)
        if (!plain && !pytest) next
        sub(/^[A-Za-z-]+: /, "", line)
        sub(/ in [0-9.]+s.*$/, "", line)
        n = split(line, parts, ", ")
        for (i = 1; i <= n; i++) {
            split(parts[i], kv, " ")
            if (kv[2] == "passed" || kv[2] == "xfailed") p += kv[1]
            else if (kv[2] == "failed" || kv[2] ~ /^errors?$/ || kv[2] == "xpassed") f += kv[1]
            else if (kv[2] == "skipped") s += kv[1]
        }
    }
    END { printf "%d %d %d\n", p, f, s }' "$1"
}

case "${1:-}" in
--begin)
    rm -f "$TABLE"
    exit 0
    ;;
--end)
    if [ ! -s "$TABLE" ]; then
        echo "stage.sh: no stage ran" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
    awk -F'\t' '
    { p += $3; f += $4; s += $5; t += $6; n++; if ($2 == "FAIL") bad = bad " " $1 }
    END {
        printf "== %d stages in %ds; logs in build/logs/\n", n, t
        if (bad != "") printf "== failed stages:%s\n", bad
        printf "%d passed, %d failed, %d skipped\n", p, f, s
        exit (bad != "")
    }' "$TABLE"
    exit $?
    ;;
"" | -h | --help)
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
    ;;
esac

NAME="$1"
shift
LOG="$LOGS/$NAME.log"
TMP="$ROOT/build/tmp/$NAME"
rm -rf "$TMP"
mkdir -p "$TMP"
start=$(date +%s)
TMPDIR="$TMP" "$@" </dev/null >"$LOG" 2>&1
rc=$?
secs=$(($(date +%s) - start))

read -r passed failed skipped < <(count_tests "$LOG")
case "$rc" in
0) status=PASS ;;
77) status=SKIP ;;
*)
    status=FAIL
    if [ "$failed" = 0 ]; then failed=1; fi
    ;;
esac
counts="$passed passed, $failed failed"
if [ "$skipped" != 0 ]; then counts="$counts, $skipped skipped"; fi
if [ "$status" != FAIL ] && [ "$passed$skipped" = 00 ]; then counts="-"; fi

if [ "$status" = FAIL ]; then
    echo "---- last ${STAGE_TAIL:-80} lines of ${LOG#"$ROOT"/} (exit $rc) ----"
    tail -n "${STAGE_TAIL:-80}" "$LOG"
    echo "---- its temporary files are kept in ${TMP#"$ROOT"/}"
else
    rm -rf "$TMP"
    rmdir "$ROOT/build/tmp" 2>/dev/null || true
fi
printf '[%s] %-14s %-40s %5ds  %s\n' "$status" "$NAME" "$counts" "$secs" "${LOG#"$ROOT"/}"
grep -E '^note: ' "$LOG" | sort -u | sed 's/^/         /'
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$NAME" "$status" "$passed" "$failed" "$skipped" "$secs" >>"$TABLE"

if [ "${STAGE_KEEP_GOING:-0}" = 1 ] || [ "$status" = SKIP ]; then exit 0; fi
exit "$rc"
