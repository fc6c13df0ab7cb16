# .ci/lib.sh - shell functions shared by the stages that run the suite on several
# CPythons or against an installed package (sourced, not run).

# find_python VERSION: prints the interpreter of CPython VERSION (e.g. 3.12): pyenv's
# newest $PYENV_ROOT/versions/VERSION.*, else pythonVERSION on PATH. None found: returns 1
# when CI=true (CI machines have 3.10-3.13), else 77, which .ci/stage.sh reports as SKIP.
find_python() {
    local ver="$1" root="${PYENV_ROOT:-$HOME/.pyenv}" cand
    for cand in $(ls -d "$root/versions/$ver".* 2>/dev/null | sort -V -r); do
        if [ -x "$cand/bin/python$ver" ]; then echo "$cand/bin/python$ver"; return 0; fi
    done
    if command -v "python$ver"; then return 0; fi
    echo "note: CPython $ver not found (looked in $root/versions/$ver.* and for python$ver on PATH)" >&2
    if [ "${CI:-}" = true ]; then
        echo "CI must test every CPython 3.10-3.13; install $ver (pyenv install $ver)" >&2
        return 1
    fi
    return 77
}

# tests_without_package SDIST DIR: unpacks SDIST into DIR and deletes its safetensors/
# package, so tests run from there import nothing but an installed package. Prints the
# unpacked tree's path.
tests_without_package() {
    rm -rf "$2"
    mkdir -p "$2"
    tar xzf "$1" -C "$2"
    local src
    src="$(ls -d "$2"/*/)"
    rm -rf "$src/safetensors"
    echo "${src%/}"
}

# check_installed PYTHON: fails unless PYTHON, in the current directory, imports
# safetensors from its site-packages.
check_installed() {
    local where
    where="$("$1" -c 'import safetensors; print(safetensors.__file__)')"
    echo "tests import $where"
    case "$where" in
    */site-packages/safetensors/*) ;;
    *) echo "the tests would not use the installed package" >&2; return 1 ;;
    esac
}
