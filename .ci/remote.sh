#!/usr/bin/env bash
# Remote checkpoints (tests/test_remote*.py): installs the client packages and
# moto's S3 server into the venv, then runs the tests against moto and nginx,
# which the tests start on 127.0.0.1. Without nginx: a SKIP with a note (`make
# deps` installs nginx-light), or, under CI=true, installed with apt-get.
# Usage: .ci/remote.sh [pytest args]   (VENV defaults to .venv; temporary files
# in build/tmp/remote)
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
build_tmp remote
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    missing_tool nginx nginx-light || exit $?
fi
# nginx from the package may have started a system instance on port 80: ours
# use their own config and port, so it does not matter.
"$PY" -m pip install -q fsspec s3fs aiohttp boto3 "moto[server]"
"$PY" -m pytest -q -p no:cacheprovider --basetemp="$BASETEMP" tests/test_remote*.py tests/test_verify.py "$@"
