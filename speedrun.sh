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
BASE="${NANOCHAT_BASE_DIR:-$HOME/.cache/nanochat}"
echo "== nanochat speedrun: mode=$MODE, GPUs=$NGPU, base dir=${NANOCHAT_BASE_DIR:-$HOME/.cache/nanochat} =="

# -----------------------------------------------------------------------------
# stage runner: prints what runs, how long it took, and stops the run at the first failure
T_START=$(date +%s)
stage() {
    local name="$1"; shift
    local t0=$(date +%s)
    echo; echo "== [$name] $* (elapsed $(( ($(date +%s) - T_START) / 60 )) min)"
    "$@"
    echo "== [$name] done in $(( $(date +%s) - t0 )) s"
}
TORCHRUN=(python)
if [ "$NGPU" -gt 1 ]; then TORCHRUN=(torchrun --standalone --nproc_per_node="$NGPU"); fi

python -m nanochat.report reset

if [ "$MODE" = online ]; then
    # ---------------------------------------------------------------------------------------------------------
    # the full run: ~4 hours on 8xH100 (fewer GPUs: the same tokens through gradient accumulation, just slower)
    DEPTH="${DEPTH:-20}"
    stage data python -m nanochat.dataset -n 8              # enough shards for the tokenizer; the rest below
    python -m nanochat.dataset -n 240 &                     # ~24B chars: enough for d20 at 20 tokens/param
    DATASET_PID=$!
    stage tokenizer python -m scripts.tok_train --vocab-size 65536 --max-chars 2000000000
    stage tok_eval python -m scripts.tok_eval
    wait "$DATASET_PID"
    stage base "${TORCHRUN[@]}" -m scripts.base_train --depth "$DEPTH" --target-param-data-ratio 20
    stage base_loss "${TORCHRUN[@]}" -m scripts.base_loss
    stage base_eval "${TORCHRUN[@]}" -m scripts.base_eval
    stage mid "${TORCHRUN[@]}" -m scripts.mid_train
    stage mid_eval "${TORCHRUN[@]}" -m scripts.chat_eval -i mid
    stage sft "${TORCHRUN[@]}" -m scripts.chat_sft
    stage sft_eval "${TORCHRUN[@]}" -m scripts.chat_eval -i sft
    if [ "${NANOCHAT_RL:-0}" = 1 ]; then  # RL on GSM8K is optional in the full run (NANOCHAT_RL=1)
        stage rl "${TORCHRUN[@]}" -m scripts.chat_rl --task gsm8k
        stage rl_eval "${TORCHRUN[@]}" -m scripts.chat_eval -i rl -a GSM8K
    fi
else
    # ---------------------------------------------------------------------------------------------------------
    # the offline default: a tiny model through every stage in well under an hour on a 2-core CPU, with a
    # report that shows each stage's effect (paired standard errors on >= 400 held-out problems)
    DEPTH="${DEPTH:-2}"
    EVAL=(-a "ARC-Easy|ARC-Challenge|MMLU|GSM8K|HumanEval" -x 100 -m 256)
    HELD_OUT=(-a "SynthMath12" -x 500 -m 128)
    stage data python -m nanochat.dataset --local
    stage tokenizer python -m scripts.tok_train --vocab-size 4096 --max-chars 20000000
    stage tok_eval python -m scripts.tok_eval
    stage base python -m scripts.base_train --depth "$DEPTH" --max-seq-len 256 --device-batch-size 16 \
        --total-batch-size 4096 --num-iterations 400 --eval-every 100 --sample-every 200 --core-every -1
    stage base_loss python -m scripts.base_loss
    stage base_eval python -m scripts.base_eval --max-per-task 200
    stage mid python -m scripts.mid_train --data offline
    stage sft python -m scripts.chat_sft --data offline
    # the value of pretraining: the same SFT from re-initialized weights (no pretraining, no mid-training)
    stage sft_scratch python -m scripts.chat_sft --data offline --from-scratch --output-tag scratch
    stage sft_eval python -m scripts.chat_eval -i sft "${EVAL[@]}"
    stage sft_heldout python -m scripts.chat_eval -i sft "${HELD_OUT[@]}" --out "$BASE/eval/sft_heldout.json"
    stage scratch_heldout python -m scripts.chat_eval -i sft -g scratch "${HELD_OUT[@]}" --out "$BASE/eval/scratch_heldout.json"
    stage compare python -m scripts.eval_compare "$BASE/eval/scratch_heldout.json" "$BASE/eval/sft_heldout.json" \
        --name "value of pretraining (SFT from base+mid vs SFT from scratch)"
    # RL with the recipe from docs/rl_recipe.md; chat_rl reports its own paired held-out comparison vs SFT
    stage rl python -m scripts.chat_rl --min-steps 2 --max-steps 4 --eval-split fresh --max-new-tokens 128 \
        --prompts-per-step 8 --num-samples 8 --num-steps 40 --temperature 0.6 --drop-constant-groups \
        --pass-k 4 --pass-k-problems 50 --eval-every -1 --eval-problems 400
    stage rl_eval python -m scripts.chat_eval -i rl "${EVAL[@]}"
fi

stage report python -m nanochat.report generate
echo "== speedrun done (mode=$MODE) in $(( ($(date +%s) - T_START) / 60 )) min; report: $BASE/report/report.md =="
