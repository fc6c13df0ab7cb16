#!/usr/bin/env bash
# .ci/sdist.sh - the source distribution installs and passes its own tests.
#
#   1. builds the sdist with `python -m build --sdist` (isolated, so the
#      build-system requirements of pyproject.toml are the ones used) and
#      fails on any setuptools deprecation warning (the license form, ...);
#   2. pip installs it, with its [test] extra, into a fresh venv
#      build/sdist/venv (the extension is compiled from the sdist's sources);
#   3. unpacks it into build/sdist/src, deletes the unpacked safetensors/
#      package so nothing but the installed one can be imported, and runs the
#      unpacked tests/ against the installed package. No torch in that venv:
#      its tests are reported as skipped (the main stage runs them).
#
# Environment: VENV (the venv with `build`, default .venv), PYTHON (the
# interpreter for the fresh venv, default that venv's base interpreter).
# Temporary files (the isolated build, pip, pytest): build/tmp/sdist.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${VENV:-.venv}/bin/python"
BASE="${PYTHON:-$("$PY" -c 'import sys; print(sys._base_executable)')}"
W="build/sdist"
. .ci/lib.sh
build_tmp sdist
rm -rf "$W"
mkdir -p "$W"

if ! "$PY" -P -c "import build" 2>/dev/null; then
    echo "note: installing pypa/build into $PY's venv (a venv made before it was in DEPS)"
    "$PY" -m pip install -q build
fi
# -P: the build/ folder in the current directory must not shadow pypa/build
echo "sdist.sh: building the sdist"
"$PY" -P -m build --sdist --outdir "$W/dist" . 2>&1 | tee "$W/build.log"
if grep -E "DeprecationWarning|BuildBackendWarning|SetuptoolsWarning|[Ww]arning: .*license" "$W/build.log"; then
    echo "sdist.sh: setuptools warned while building the sdist (above)" >&2
    exit 1
fi
SDIST="$(ls "$W"/dist/*.tar.gz)"
echo "sdist.sh: $SDIST ($(tar tzf "$SDIST" | wc -l) files)"

echo "sdist.sh: installing it into a fresh venv"
"$BASE" -m venv "$W/venv"
"$W/venv/bin/python" -m pip install -q "$SDIST[test]" 2>&1 | tee "$W/install.log"

SRC="$(tests_without_package "$SDIST" "$W/src")"
cd "$SRC"
check_installed "$ROOT/$W/venv/bin/python"
"$ROOT/$W/venv/bin/python" -m pytest -q -rs -p no:cacheprovider --basetemp="$BASETEMP" tests
