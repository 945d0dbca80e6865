#!/usr/bin/env bash
# The main job: set everything up, then run the pipeline end to end.
#
#   bash speedrun.sh                 # auto: full run on a GPU node with internet, small offline run otherwise
#   bash speedrun.sh --offline       # force the small offline CPU default
#   bash speedrun.sh --depth 12      # override the model depth of the full run
#
# Modes (chosen automatically and announced):
#   online GPU : FineWeb-EDU shards, 65536-token tokenizer on ~2B chars, d20 at the Chinchilla ratio, ...
#   offline CPU: a local corpus built from Debian text packages, a 4096-token tokenizer, a tiny model.
# Everything lands in $NANOCHAT_BASE_DIR (default ~/.cache/nanochat).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

MODE=auto
DEPTH=""
while [ $# -gt 0 ]; do
    case "$1" in
        --offline) MODE=offline ;;
        --online) MODE=online ;;
        --depth) DEPTH="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "speedrun.sh: unknown argument $1 (see --help)"; exit 2 ;;
    esac
    shift
done

# -----------------------------------------------------------------------------
# setup (idempotent)
bash scripts/setup.sh
source .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

# -----------------------------------------------------------------------------
# which mode?
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
hub_ok() { curl -fsS -m 5 -o /dev/null https://huggingface.co/api/datasets/karpathy/fineweb-edu-100b-shuffle 2>/dev/null; }
if [ "$MODE" = auto ]; then
    if [ "$NGPU" -gt 0 ] && hub_ok; then MODE=online; else MODE=offline; fi
fi
echo "== nanochat speedrun: mode=$MODE, GPUs=$NGPU, base dir=${NANOCHAT_BASE_DIR:-$HOME/.cache/nanochat} =="

# -----------------------------------------------------------------------------
# data and tokenizer
if [ "$MODE" = online ]; then
    python -m nanochat.dataset -n 8            # enough shards for the tokenizer; the rest in the background
    python -m nanochat.dataset -n 240 &
    DATASET_PID=$!
    python -m scripts.tok_train --vocab-size 65536 --max-chars 2000000000
else
    python -m nanochat.dataset --local
    python -m scripts.tok_train --vocab-size 4096 --max-chars 20000000
fi
python -m scripts.tok_eval
if [ -n "${DATASET_PID:-}" ]; then wait "$DATASET_PID"; fi

echo "== speedrun done (mode=$MODE) =="
