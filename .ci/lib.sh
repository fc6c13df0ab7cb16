# .ci/lib.sh - shell functions shared by the stage scripts (sourced, not run): finding the
# CPythons, testing an installed package, the system tools a stage needs, temporary files.

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

# clang_major [CC]: the major version of clang (default: clang), e.g. 14, which names Debian's
# libclang-rt-N-dev (libFuzzer and the sanitizer runtimes).
clang_major() {
    "${1:-clang}" --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1
}

# apt_install PACKAGE...: installs Debian/Ubuntu packages with apt-get (through sudo when not root).
apt_install() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# missing_tool WHAT PACKAGE...: a stage lacks WHAT, which the Debian PACKAGEs provide. Nothing
# touches the system unless asked: under CI=true it installs them (apt_install, saying so in a
# note; returns non-zero if that fails), otherwise it says how to get them in a note and returns
# 77, which .ci/stage.sh reports as SKIP. `make deps` installs what every stage needs.
missing_tool() {
    local what="$1"
    shift
    if [ "${CI:-}" = true ]; then
        echo "note: $what missing: installing $* with apt-get (CI=true)"
        apt_install "$@"
        return
    fi
    echo "note: $what missing, stage skipped: \`make deps\` installs it (or: sudo apt-get install $*)"
    return 77
}

# build_tmp NAME: TMPDIR (pip, mktemp, tempfile) under build/tmp/, unless .ci/stage.sh already
# pointed it there, and BASETEMP, pytest's --basetemp inside it: no test leaves files elsewhere.
build_tmp() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    case "${TMPDIR:-}" in
    "$root"/build/tmp/*) ;;
    *) export TMPDIR="$root/build/tmp/$1" ;;
    esac
    mkdir -p "$TMPDIR"
    BASETEMP="$TMPDIR/pytest"
}
