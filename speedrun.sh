#!/usr/bin/env bash
# The main job: set everything up, then run the pipeline end to end.
#
#   bash speedrun.sh                 # auto: full run on a GPU node with internet, small offline run otherwise
#   bash speedrun.sh --offline       # force the small offline CPU default
#   bash speedrun.sh --depth 12      # override the model depth
#   bash speedrun.sh --micro DIR --skip-setup   # every stage at toy sizes on text files in DIR (the test suite)
#
# Modes (chosen automatically and announced):
#   online GPU : FineWeb-EDU shards, 65536-token tokenizer on ~2B chars, d20 at the Chinchilla ratio, ...
#   offline CPU: a local corpus built from Debian text packages, a 4096-token tokenizer, a tiny model.
# Everything lands in $NANOCHAT_BASE_DIR (default ~/.cache/nanochat).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

MODE=auto
DEPTH=""
MICRO=0
SKIP_SETUP=0
LOCAL_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --offline) MODE=offline ;;
        --online) MODE=online ;;
        --depth) DEPTH="$2"; shift ;;
        --micro) MODE=offline; MICRO=1; LOCAL_DIR="$2"; shift ;;   # tiny sizes on a corpus from DIR (the test suite)
        --skip-setup) SKIP_SETUP=1 ;;                             # use the python on PATH as it is
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "speedrun.sh: unknown argument $1 (see --help)"; exit 2 ;;
    esac
    shift
done

# -----------------------------------------------------------------------------
# setup (idempotent)
if [ "$SKIP_SETUP" = 0 ]; then
    bash scripts/setup.sh
    source .venv/bin/activate
fi
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
    # the offline default: a tiny model through every stage on a 2-core CPU, with a report that shows each
    # stage's effect with paired standard errors on >= 400 held-out problems. --micro shrinks every size so the
    # test suite can run the whole pipeline in a few minutes (tests/test_speedrun.py).
    if [ "$MICRO" = 1 ]; then
        DEPTH="${DEPTH:-1}"; VOCAB=512; MAX_CHARS=2000000; CORE_N=2
        BASE_SIZE=(--max-seq-len 128 --device-batch-size 4 --total-batch-size 512 --num-iterations 20 --eval-every 10 --eval-tokens 4096)
        CHAT_SIZE=(--num-iterations 4 --device-batch-size 4 --eval-every -1 --eval-batches 2 --eval-tasks "")
        MID_MIX=(--mix "synthmath:60,mcq:30,spelling:10")
        SFT_MIX=(--mix "synthmath12:60,mcq:20" --examples-per-step 8)
        EVAL=(-a "ARC-Easy|SynthMath12" -x 4 -m 32)
        HELD_OUT=(-a "SynthMath12|SynthMathFresh" -x 8 -m 32)
        RL_SIZE=(--num-steps 2 --prompts-per-step 2 --num-samples 2 --eval-problems 4 --max-new-tokens 32 --pass-k 0)
        DATA_CMD=(python -m nanochat.dataset --local-dir "$LOCAL_DIR")
    else
        DEPTH="${DEPTH:-2}"; VOCAB=4096; MAX_CHARS=20000000; CORE_N=200
        BASE_SIZE=(--max-seq-len 256 --device-batch-size 16 --total-batch-size 4096 --num-iterations 400 --eval-every 100)
        CHAT_SIZE=()
        MID_MIX=()
        SFT_MIX=()
        EVAL=(-a "ARC-Easy|ARC-Challenge|MMLU|GSM8K|HumanEval" -x 100 -m 256)
        HELD_OUT=(-a "SynthMath12|SynthMathFresh" -x 500 -m 128)
        RL_SIZE=(--num-steps 80 --prompts-per-step 8 --num-samples 8 --eval-problems 400 --max-new-tokens 128 --pass-k 4 --pass-k-problems 50)
        DATA_CMD=(python -m nanochat.dataset --local)
    fi
    # every stage names the checkpoint it reads: "the newest tag" would pick the scratch ablation below
    TAG="d$DEPTH"
    stage data "${DATA_CMD[@]}"
    stage tokenizer python -m scripts.tok_train --vocab-size "$VOCAB" --max-chars "$MAX_CHARS"
    stage tok_eval python -m scripts.tok_eval
    stage base python -m scripts.base_train --depth "$DEPTH" --model-tag "$TAG" "${BASE_SIZE[@]}" --sample-every -1 --core-every -1
    stage base_loss python -m scripts.base_loss --model-tag "$TAG"
    stage base_eval python -m scripts.base_eval --model-tag "$TAG" --max-per-task "$CORE_N"
    stage mid python -m scripts.mid_train --model-tag "$TAG" --data offline "${MID_MIX[@]}" "${CHAT_SIZE[@]}"
    stage sft python -m scripts.chat_sft --model-tag "$TAG" --data offline "${SFT_MIX[@]}" "${CHAT_SIZE[@]}"
    # the value of pretraining: the same SFT from re-initialized weights (no pretraining, no mid-training)
    stage sft_scratch python -m scripts.chat_sft --model-tag "$TAG" --data offline "${SFT_MIX[@]}" "${CHAT_SIZE[@]}" \
        --from-scratch --output-tag scratch
    stage sft_eval python -m scripts.chat_eval -i sft -g "$TAG" "${EVAL[@]}"
    # held-out math: SynthMath12 (templates and number ranges training never shows: a hard transfer test) and
    # SynthMathFresh (500 unseen problems of the training distribution, the same set chat_rl holds out)
    stage sft_heldout python -m scripts.chat_eval -i sft -g "$TAG" "${HELD_OUT[@]}" --out "$BASE/eval/sft_heldout.json"
    stage scratch_heldout python -m scripts.chat_eval -i sft -g scratch "${HELD_OUT[@]}" --out "$BASE/eval/scratch_heldout.json"
    stage compare_pretraining python -m scripts.eval_compare "$BASE/eval/scratch_heldout.json" "$BASE/eval/sft_heldout.json" \
        --name "value of pretraining (SFT from base+mid vs SFT from scratch)"
    # RL with the recipe of docs/rl_recipe.md; chat_rl reports its own paired held-out comparison with its start
    stage rl python -m scripts.chat_rl --source sft --model-tag "$TAG" --min-steps 2 --max-steps 4 --eval-split fresh \
        --temperature 0.6 --drop-constant-groups --eval-every -1 "${RL_SIZE[@]}"
    stage rl_eval python -m scripts.chat_eval -i rl -g "$TAG" "${EVAL[@]}"
    stage rl_heldout python -m scripts.chat_eval -i rl -g "$TAG" "${HELD_OUT[@]}" --out "$BASE/eval/rl_heldout.json"
    stage compare_rl python -m scripts.eval_compare "$BASE/eval/sft_heldout.json" "$BASE/eval/rl_heldout.json" \
        --name "value of RL (RL vs its SFT start)"
fi

stage report python -m nanochat.report generate
echo "== speedrun done (mode=$MODE) in $(( ($(date +%s) - T_START) / 60 )) min; report: $BASE/report/report.md =="
