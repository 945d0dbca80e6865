#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with torch, nanochat's dependencies and the rustbpe
# extension built in release mode. Used by speedrun.sh and tests/run.sh; safe to run again (a second run with
# nothing changed only checks a stamp and returns in about a second).
#
#   bash scripts/setup.sh            # then: source .venv/bin/activate
#
# What it decides by itself (detect, don't ask):
#   - torch: a CUDA build when `nvidia-smi` sees a GPU, else the CPU build (torch==2.13.0; on machines whose pip
#     has a local wheel for it, that one).
#   - Rust crates: crates.io when reachable, else Debian's librust-*-dev sources (scripts/cargo_source.sh).
#   - Rust toolchain: the one on PATH; rustup when there is none and the internet is reachable; else Debian's.
# Env knobs: PYTHON (interpreter to build the venv from, default python3), NANOCHAT_VENV (default .venv),
#            NANOCHAT_TORCH (pip spec that overrides the torch choice).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${NANOCHAT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
say() { echo "[setup] $*"; }

# -----------------------------------------------------------------------------
# what kind of machine is this?
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAS_GPU=1; else HAS_GPU=0; fi
TORCH_SPEC="${NANOCHAT_TORCH:-torch==2.13.0}"

# Everything that should trigger a rebuild goes into the stamp.
stamp_inputs() {
    cat pyproject.toml Cargo.toml rustbpe/Cargo.toml scripts/setup.sh scripts/cargo_source.sh 2>/dev/null
    find rustbpe/src -type f -name '*.rs' -print0 2>/dev/null | sort -z | xargs -0 cat 2>/dev/null
    echo "gpu=$HAS_GPU torch=$TORCH_SPEC python=$("$PYTHON" -c 'import sys; print(sys.version)')"
}
STAMP_VALUE="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
STAMP_FILE="$VENV/.nanochat-setup-stamp"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP_VALUE" ] && "$VENV/bin/python" -c "import rustbpe, torch, nanochat" 2>/dev/null; then
    say "up to date ($VENV)"
    exit 0
fi

# -----------------------------------------------------------------------------
# the virtual environment
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "nanochat needs Python >= 3.10"' \
    || { say "error: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
# pip >= 25.1 understands [dependency-groups] (the dev group)
"$PY" -c 'import pip, sys; sys.exit(int(tuple(map(int, pip.__version__.split(".")[:2])) < (25, 1)))' \
    || { say "upgrading pip"; "${PIP[@]}" install --upgrade "pip>=25.1"; }

# -----------------------------------------------------------------------------
# torch: CUDA build on GPU machines, CPU build elsewhere
have_torch_flavour() {  # is the right torch already there?
    "$PY" - "$HAS_GPU" <<'EOF' 2>/dev/null
import sys, torch
want_cuda = sys.argv[1] == "1"
sys.exit(0 if (torch.version.cuda is not None) == want_cuda else 1)
EOF
}
if [ -n "${NANOCHAT_TORCH:-}" ]; then
    say "installing $TORCH_SPEC (NANOCHAT_TORCH)"; "${PIP[@]}" install "$TORCH_SPEC"
elif have_torch_flavour; then
    say "torch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
elif [ "$HAS_GPU" = 1 ]; then
    say "GPU found: installing a CUDA build of torch"
    "${PIP[@]}" install torch   # PyPI's Linux x86-64 torch wheels are CUDA builds
else
    say "no GPU: installing the CPU build $TORCH_SPEC"
    # prefer PyTorch's CPU index when it is reachable (a few hundred MB instead of the CUDA wheel's GBs)
    if curl -fsS -m 5 -o /dev/null https://download.pytorch.org/whl/cpu/ 2>/dev/null; then
        "${PIP[@]}" install "$TORCH_SPEC" --extra-index-url https://download.pytorch.org/whl/cpu
    else
        "${PIP[@]}" install "$TORCH_SPEC"
    fi
fi

# -----------------------------------------------------------------------------
# Rust: toolchain, then the crate source (crates.io or Debian's vendored crates)
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
if ! command -v cargo >/dev/null 2>&1; then
    if curl -fsS -m 5 -o /dev/null https://sh.rustup.rs 2>/dev/null; then
        say "installing Rust with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        say "installing Rust from Debian (apt-get install cargo)"
        apt-get install -y -q cargo >/dev/null
    fi
fi
# shellcheck source=scripts/cargo_source.sh
source scripts/cargo_source.sh

# -----------------------------------------------------------------------------
# nanochat itself (editable: builds rustbpe in release mode) and the dev group (pytest, maturin, ...)
say "building rustbpe and installing nanochat (pip install -e .)"
"${PIP[@]}" install -e .
"${PIP[@]}" install --group dev
"$PY" -c "import rustbpe, nanochat, tasks, scripts, torch; print('[setup] ok: torch', torch.__version__, '| cuda' if torch.cuda.is_available() else '| cpu')"
echo "$STAMP_VALUE" > "$STAMP_FILE"
