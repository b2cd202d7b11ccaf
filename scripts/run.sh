#!/usr/bin/env bash
# The main job on embedded defaults: install, then run the gobi server with SQLite
# metadata, local encrypted storage and in-process fan-out under ./gobi-data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/gobi server --data-dir "${GOBI_DATA_DIR:-$PWD/gobi-data}" "$@"
