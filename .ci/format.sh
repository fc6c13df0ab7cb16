#!/usr/bin/env bash
# The C sources follow .clang-format: `.ci/format.sh` checks (a stage of
# `make test`), `.ci/format.sh --fix` rewrites them (`make format`). The style
# is pinned to clang-format 14 (Debian 12's), installed with apt when missing:
# another major version formats some constructs differently.
set -euo pipefail
cd "$(dirname "$0")/.."
CF="$(command -v clang-format-14 || true)"
if [ -z "$CF" ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-format-14 >/dev/null 2>&1 || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-format-14 >/dev/null; }
        CF="$(command -v clang-format-14)"
    else
        echo "format.sh: clang-format-14 missing and not root: install clang-format-14" >&2
        exit 1
    fi
fi
mapfile -t FILES < <(git ls-files 'csrc/*.c' 'csrc/*.h')
if [ "${1:-}" = --fix ]; then
    "$CF" -i "${FILES[@]}"
else
    "$CF" --dry-run --Werror "${FILES[@]}"
    echo "format.sh: ${#FILES[@]} C files follow .clang-format"
fi
