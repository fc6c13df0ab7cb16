#!/usr/bin/env bash
# .ci/deps.sh (`make deps`) - installs with apt-get (sudo when not root) the system packages the
# stages use: nginx-light (remote and pytest: http:// sources), clang-format-14 (format), clang
# and libclang-rt-N-dev (fuzz: libFuzzer), gcc and libc6-dev (build, c-core, sanitize: libasan).
# Nothing else installs system packages, except a stage under CI=true (.ci/lib.sh missing_tool);
# without them a stage that needs one is skipped with a note naming this command.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
PACKAGES=(nginx-light clang-format-14 clang gcc libc6-dev)
echo "deps.sh: apt-get install ${PACKAGES[*]}"
apt_install "${PACKAGES[@]}"
# libFuzzer and the sanitizer runtimes of the clang just installed (Debian >= 12, Ubuntu >= 23.04)
ver="$(clang_major)"
echo "deps.sh: apt-get install libclang-rt-$ver-dev"
apt_install "libclang-rt-$ver-dev" ||
    echo "deps.sh: no libclang-rt-$ver-dev here (older releases ship libFuzzer with clang itself)"
echo "deps.sh: done"
