#!/usr/bin/env bash
# The test command: full setup (idempotent), then the whole test suite.
#   bash tests/run.sh            # everything
#   bash tests/run.sh -k engine  # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# the browser tests drive Debian's Chromium (Playwright's own browser download does not work offline);
# the sandbox's strict mode uses bubblewrap
if { ! command -v chromium || ! command -v bwrap; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[tests] installing Debian chromium and bubblewrap for the browser and sandbox tests"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-color-emoji bubblewrap) >/dev/null 2>&1 \
        || echo "[tests] could not install chromium/bubblewrap: the browser and strict-sandbox tests will skip, saying why"
fi
# tests get their own scratch base dir so they never touch a user's ~/.cache/nanochat
export NANOCHAT_BASE_DIR="${NANOCHAT_TEST_BASE_DIR:-$ROOT/out/test_base}"
exec "$ROOT/.venv/bin/python" -m pytest tests -q -ra "$@"
