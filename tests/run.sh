#!/usr/bin/env bash
# The test command: full setup (idempotent), then the whole test suite.
#   bash tests/run.sh            # everything
#   bash tests/run.sh -k engine  # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# tests get their own scratch base dir so they never touch a user's ~/.cache/nanochat
export NANOCHAT_BASE_DIR="${NANOCHAT_TEST_BASE_DIR:-$ROOT/out/test_base}"
exec "$ROOT/.venv/bin/python" -m pytest tests -q -ra "$@"
