#!/usr/bin/env bash
# Every framework for real: one venv per framework under build/ (reused when
# already made), its tests in a process of their own (tensorflow and paddle
# crash when imported into one process), and a check that upstream 0.8.0
# still writes the committed fixtures byte for byte. One summary line per
# framework; exits non-zero if any test failed or skipped.
#
#   .ci/frameworks.sh              # all four, installing their venvs (`make test-frameworks`, `make ci`)
#   .ci/frameworks.sh tf paddle    # some of them (tf, paddle, mlx, flax)
#   .ci/frameworks.sh --installed  # those whose venv is already there (`make test`); none:
#                                  # exit 77 (SKIP) with a note
# Temporary files: build/tmp/frameworks.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. .ci/lib.sh
build_tmp frameworks
PYTHON=${PYTHON:-python3}
ALL=(tf paddle mlx flax)
INSTALLED=0
if [ "${1:-}" = --installed ]; then INSTALLED=1; shift; fi
FRAMEWORKS=("$@")
[ ${#FRAMEWORKS[@]} -eq 0 ] && FRAMEWORKS=("${ALL[@]}")
if [ $INSTALLED = 1 ]; then
    have=() missing=()
    for fw in "${FRAMEWORKS[@]}"; do
        if [ -f "build/venv-$fw/.deps" ]; then have+=("$fw"); else missing+=("$fw"); fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "note: not installed, not tested: ${missing[*]} (\`make test-frameworks\` installs TensorFlow," \
            "PaddlePaddle, MLX and JAX into build/venv-*, about 3.4 GB, and tests them)"
    fi
    [ ${#have[@]} -eq 0 ] && exit 77
    FRAMEWORKS=("${have[@]}")
fi

declare -A PACKAGES=([tf]="tensorflow-cpu" [paddle]="paddlepaddle" [mlx]="mlx[cpu]" [flax]="jax[cpu] flax")
declare -A IMPORTS=([tf]="tensorflow" [paddle]="paddle" [mlx]="mlx.core" [flax]="jax")
declare -A TESTS=([tf]="test_tensorflow.py" [paddle]="test_paddle.py" [mlx]="test_mlx.py" [flax]="test_flax.py")

mkdir -p build
make -s build >build/frameworks-make.log 2>&1 || { tail -20 build/frameworks-make.log; echo "frameworks: make build failed"; exit 1; }

# upstream 0.8.0, unpacked (not installed): only the fixture generator uses it.
UPSTREAM=build/upstream-0.8.0
if [ ! -f "$UPSTREAM/safetensors/__init__.py" ]; then
    rm -rf build/dl "$UPSTREAM"
    "$PYTHON" -m pip download -q --no-deps safetensors==0.8.0 -d build/dl &&
        "$PYTHON" -m zipfile -e build/dl/safetensors-0.8.0-*.whl "$UPSTREAM" ||
        { echo "frameworks: cannot fetch safetensors==0.8.0"; exit 1; }
fi

status=0
summary=()
total_passed=0
total_failed=0
for fw in "${FRAMEWORKS[@]}"; do
    venv=build/venv-$fw
    log=build/frameworks-$fw.log
    start=$(date +%s)
    if [ ! -f "$venv/.deps" ]; then
        rm -rf "$venv"
        # shellcheck disable=SC2086  # PACKAGES holds several words on purpose
        if ! { "$PYTHON" -m venv "$venv" &&
               "$venv/bin/python" -m pip install -q numpy ml_dtypes pytest ${PACKAGES[$fw]}; } >"$log" 2>&1; then
            summary+=("frameworks: $fw: install FAILED (see $log)"); status=1; continue
        fi
        touch "$venv/.deps"
    fi
    installed=$(( $(date +%s) - start ))
    version=$("$venv/bin/python" -c "import ${IMPORTS[$fw]} as m; print(m.__version__)" 2>>"$log") || {
        summary+=("frameworks: $fw: import ${IMPORTS[$fw]} FAILED: $(tail -1 "$log")"); status=1; continue; }

    start=$(date +%s)
    # The fixtures: upstream 0.8.0 from this framework must write them again, byte for byte.
    regen=$(mktemp -d)
    fixtures="same"
    if ! (cd "$regen" && PYTHONPATH=$ROOT/$UPSTREAM "$ROOT/$venv/bin/python" -W ignore \
            "$ROOT/tests/fixtures/upstream_frameworks/make_fixtures.py" "$fw" "$regen") >>"$log" 2>&1 ||
       ! cmp -s "$regen/$fw.safetensors" "tests/fixtures/upstream_frameworks/$fw.safetensors"; then
        fixtures="DIFFER"; status=1
    fi
    rm -rf "$regen"
    # Our package from the repository root; the framework's tests, then the
    # read API's other-framework check, in processes of their own.
    result=$(PYTHONPATH=$ROOT "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$BASETEMP" -W ignore::DeprecationWarning \
                 "tests/frameworks/${TESTS[$fw]}" 2>&1 | tee -a "$log" | tail -1)
    api=$(PYTHONPATH=$ROOT "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$BASETEMP" \
              "tests/test_read_api.py::test_other_frameworks_if_installed" 2>&1 | tee -a "$log" | tail -1)
    # Advanced indexing (index arrays, masks) against NumPy's, on this framework.
    adv=$(PYTHONPATH=$ROOT "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$BASETEMP" \
              "tests/test_independent_arrays.py::test_advanced_indexing_matches_numpy" -k "$fw" 2>&1 |
              tee -a "$log" | tail -1)
    tested=$(( $(date +%s) - start ))
    case "$result" in
        *failed* | *error* | *skipped* | "") status=1; verdict="FAILED" ;;
        *passed*) verdict="ok" ;;
        *) status=1; verdict="FAILED" ;;
    esac
    case "$api" in *failed* | *error* | "") status=1; verdict="FAILED" ;; esac
    case "$adv" in *failed* | *error* | *skipped* | "") status=1; verdict="FAILED" ;; esac
    for line in "$result" "$api" "$adv"; do
        n=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+') && total_passed=$((total_passed + n))
        n=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+') && total_failed=$((total_failed + n))
    done
    summary+=("frameworks: $fw ${IMPORTS[$fw]} $version: $verdict: ${result//=/} | read_api: ${api//=/} | indexing: ${adv//=/} | fixtures $fixtures | install ${installed}s, tests ${tested}s")
done
printf '%s\n' "${summary[@]}"
# The closing line .ci/stage.sh adds up (a framework that failed to install counts once).
[ $status -ne 0 ] && [ $total_failed -eq 0 ] && total_failed=1
echo "frameworks: $total_passed passed, $total_failed failed"
exit $status
