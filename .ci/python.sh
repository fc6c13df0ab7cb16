#!/usr/bin/env bash
# .ci/python.sh VERSION [PYTEST_ARGS...] - build the extension with CPython
# VERSION (e.g. 3.12) and run the test suite with it.
#
#   * finds the interpreter (find_python in .ci/lib.sh: none found is exit 77,
#     a SKIP, or exit 1 when CI=true);
#   * its own venv build/py-VERSION with NumPy, ml_dtypes, pytest, hypothesis,
#     xxhash (no torch: the pinned CPU wheel is for 3.11, where the main stage runs the
#     torch tests; here they are reported as skipped);
#   * builds safetensors/_safetensors_c.cpython-VER*.so in place (the file
#     name carries the version, so it sits beside the other versions' builds)
#     and runs pytest from the repository root (temporary files in
#     build/tmp/python-VERSION).
set -euo pipefail

VER="${1:?usage: .ci/python.sh VERSION [PYTEST_ARGS...]}"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. .ci/lib.sh
BASE="$(find_python "$VER")" || exit $?
build_tmp "python-$VER"

VENV="build/py-$VER"
PY="$VENV/bin/python"
DEPS=(numpy ml_dtypes pytest hypothesis xxhash "setuptools>=77")
if [ ! -f "$VENV/.deps" ]; then
    echo "python.sh: creating $VENV from $BASE"
    rm -rf "$VENV"
    "$BASE" -m venv "$VENV"
    "$PY" -m pip install -q "${DEPS[@]}"
    touch "$VENV/.deps"
fi
if ! "$PY" -c "import xxhash" 2>/dev/null; then
    echo "note: installing xxhash into $VENV (a venv made before it was in DEPS; checksum=\"xxh3_128\")"
    "$PY" -m pip install -q xxhash
fi
"$PY" --version

echo "python.sh: building the extension in place (SAFETENSORS_WERROR=${SAFETENSORS_WERROR:-0})"
"$PY" setup.py -q build_ext --inplace
# Prove the tests below use the extension just built for this interpreter.
"$PY" -c "import safetensors._safetensors_c as m, sys; print('extension:', m.__file__); \
assert 'cpython-%d%d' % sys.version_info[:2] in m.__file__"

"$PY" -m pytest -q -rs -p no:cacheprovider --basetemp="$BASETEMP" tests "$@"
