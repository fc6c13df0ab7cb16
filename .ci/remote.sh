#!/usr/bin/env bash
# Remote checkpoints (tests/test_remote*.py): installs what the tests start on
# 127.0.0.1 (moto's S3 server, nginx) and the optional client packages, then
# runs them. Usage: .ci/remote.sh [pytest args]   (VENV defaults to .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    else
        echo "remote.sh: nginx missing and not root: install nginx-light" >&2
        exit 1
    fi
fi
# nginx from the package may have started a system instance on port 80: ours
# use their own config and port, so it does not matter.
"$PY" -m pip install -q fsspec s3fs aiohttp boto3 "moto[server]"
"$PY" -m pytest -q -p no:cacheprovider tests/test_remote*.py tests/test_verify.py "$@"
