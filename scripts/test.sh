#!/usr/bin/env bash
# The test command: install what the tests need, then run the whole suite.
# Tests start and stop the services they use themselves (gobi servers, redis-server,
# FUSE mounts), bound to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
exec .venv/bin/python -m pytest -q "$@"
