"""
Supervised fine-tuning (SFT): one conversation per row, right-padded, loss only on the assistant's tokens
(mask == 1), a held-out val loss and periodic task evaluations. The loop is nanochat/sft.py (RFT and CFT reuse it).

The mixture is a spec of `name[:count]` items (names: nanochat/chat_data.py REGISTRY; a count above a
real set's size repeats it, a synthetic task is generated to that size):
  online default:  arc-easy,arc-challenge,gsm8k,smoltalk:10000,identity:1000,spelling:600,spell:300
  offline default: synthmath:7000,mcq:1000,synthif:1000,arc-easy-val,arc-challenge-val,identity:500,
                   spelling:1000,spell:300   (about 1M tokens: the issue-8 pilot's budget that took a d2
                   model to 68.5% on held-out 1-2 step synthmath)

    python -m scripts.chat_sft                                     # CPU: from the latest mid checkpoint, offline mix
    python -m scripts.chat_sft --mix synthmath:5000,spelling:1000  # mixture flags
    python -m scripts.chat_sft --source base                       # skip mid-training
    python -m scripts.chat_sft --device-batch-size 4               # one GPU
    torchrun --standalone --nproc_per_node=8 -m scripts.chat_sft   # 8 GPUs
    python -m scripts.chat_sft --resume                            # continue the latest sft checkpoint

Outputs: checkpoints in <base_dir>/checkpoints/sft/<tag>/, metrics in <base_dir>/runs/sft_<tag>/metrics.jsonl,
report section "Chat SFT".
"""
import argparse

from nanochat.common import compute_init, compute_cleanup, print0, require_positive
from nanochat.sft import (add_train_args, apply_device_preset, check_train_args, config_from_args, load_input_model,
                          load_train_val, train_chat_or_exit)
from nanochat.report import get_report

# -----------------------------------------------------------------------------
# arguments (None defaults are filled from the device presets below)

parser = argparse.ArgumentParser(description="Supervised fine-tuning on conversations, one per row.")
add_train_args(parser, dict(source="mid", device_batch_size=None, init_lr_frac=None, eval_every=None,
                            eval_batches=None, eval_tasks=None, eval_max_problems=None))
parser.add_argument("--examples-per-step", type=int, default=None, help="conversations per optimizer step over all processes (default: 32 GPU, 16 CPU)")
args = parser.parse_args()
check_train_args(parser, args)
require_positive(parser, args, ["examples_per_step"])
args.schedule = "linear"  # decay to zero over the epoch

ci = compute_init(args.device_type, seed=args.seed)
# GPU: nanochat's recipe (lr 2% of base: the model is trained, SFT only nudges it). CPU: the small offline
# models learn synthmath much faster with a larger lr (10%), and the evals use the held-out synthetic splits.
PRESETS = dict(
    gpu=dict(device_batch_size=4, examples_per_step=32, init_lr_frac=0.02, eval_every=100, eval_batches=25,
             eval_tasks="ARC-Easy|MMLU|GSM8K|SynthMath", eval_max_problems=100),
    cpu=dict(device_batch_size=8, examples_per_step=16, init_lr_frac=0.1, eval_every=200, eval_batches=8,
             eval_tasks="SynthMath12|MCQ", eval_max_problems=50),
)
apply_device_preset(args, PRESETS, ci)

# -----------------------------------------------------------------------------
# input model, data, configuration

model, tokenizer, input_meta = load_input_model(args, ci.device)
train_task, train_desc, val_task, val_desc = load_train_val("sft", args)
cfg = config_from_args(args, "sft", packed=False, rows_per_step=args.examples_per_step,
                       model_tag=args.output_tag or input_meta["tag"],
                       max_seq_len=args.max_seq_len or model.config.sequence_len)
source_info = dict(source=dict(stage=args.source, tag=input_meta["tag"], step=input_meta["step"]),
                   data=dict(train=train_desc, val=val_desc))

# -----------------------------------------------------------------------------
# train, report

summary = train_chat_or_exit(model, tokenizer, train_task, val_task, cfg, ci, meta_extra=source_info)
stats = summary["loader_stats"]
get_report().log("Chat SFT", [vars(args), source_info["source"], {
    "train data": train_desc, "val data": val_desc, "steps": summary["steps"], "tokens": summary["tokens"],
    "padding fraction": stats["padding"] / max(1, stats["tokens"]), "val loss": summary["val_loss"],
    "training time (min)": summary["train_time"] / 60, **{f"eval {k}": v for k, v in summary["evals"].items()},
    "checkpoint": summary["checkpoint"]}], column="sft")
print0(f"checkpoint: {summary['checkpoint']}")
compute_cleanup()
