#!/usr/bin/env bash
# The C sources follow .clang-format: `.ci/format.sh` checks (a stage of
# `make ci`), `.ci/format.sh --fix` rewrites them (`make format`). The style
# is pinned to clang-format 14 (Debian 12's): another major version formats
# some constructs differently. Without it: a SKIP with a note (`make deps`
# installs it), or, under CI=true, installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
if ! command -v clang-format-14 >/dev/null; then
    missing_tool clang-format-14 clang-format-14 || exit $?
fi
CF="$(command -v clang-format-14)"
mapfile -t FILES < <(git ls-files 'csrc/*.c' 'csrc/*.h')
if [ "${1:-}" = --fix ]; then
    "$CF" -i "${FILES[@]}"
else
    "$CF" --dry-run --Werror "${FILES[@]}"
    echo "format.sh: ${#FILES[@]} C files follow .clang-format"
fi
