"""
Mid-training: from the base checkpoint, teach the conversation format, tool use and multiple choice on a
mixture of conversations packed into rows like pretraining (nanochat/chat_data.py: PackedChatLoader).

The mixture (nanochat/chat_data.py MIXTURES, chosen in one place and announced at start):
  online (Hugging Face): SmolTalk + MMLU auxiliary_train + GSM8K train + identity + spelling
  offline (wheels + synthetic): synthmath, synthif, MC practice, ARC/MMLU validation+dev, SciQ, OpenBookQA,
                                identity, spelling -- never a test split
By default every token is learned (user turns too): see chat_data.py for why; --mask-loss learns only the
assistant's tokens.

    python -m scripts.mid_train                                   # CPU: offline mixture, ~1M tokens
    python -m scripts.mid_train --num-iterations 20               # a quick CPU smoke run
    python -m scripts.mid_train --mix synthmath:2000,identity:200 # a custom mixture
    python -m scripts.mid_train --device-batch-size 16            # one GPU (bf16, torch.compile)
    torchrun --standalone --nproc_per_node=8 -m scripts.mid_train # 8 GPUs
    python -m scripts.mid_train --resume                          # continue the latest mid checkpoint

Outputs: checkpoints in <base_dir>/checkpoints/mid/<tag>/, metrics in <base_dir>/runs/mid_<tag>/metrics.jsonl,
report section "Midtraining".
"""
import argparse

from nanochat.common import compute_init, compute_cleanup, print0, require_positive
from nanochat.sft import (add_train_args, apply_device_preset, check_train_args, config_from_args, load_input_model,
                          load_train_val, train_chat_or_exit)
from nanochat.report import get_report

# -----------------------------------------------------------------------------
# arguments (None defaults are filled from the device presets below)

parser = argparse.ArgumentParser(description="Mid-train a base model on packed conversations.")
add_train_args(parser, dict(source="base", device_batch_size=None, init_lr_frac=1.0, eval_every=None,
                            eval_batches=None, eval_tasks="", eval_max_problems=50))
parser.add_argument("--total-batch-size", type=int, default=None, help="tokens per optimizer step over all processes (default: 524288 GPU, 8192 CPU)")
parser.add_argument("--warmdown-ratio", type=float, default=0.2, help="fraction of the run at the end with the lr decaying linearly to 0")
parser.add_argument("--mask-loss", action="store_true", help="learn only the assistant's tokens (mask == 1) instead of every token")
args = parser.parse_args()
check_train_args(parser, args)
require_positive(parser, args, ["total_batch_size"])
if not 0 <= args.warmdown_ratio <= 1:
    parser.error("--warmdown-ratio must lie in [0, 1]")
args.schedule = "warmdown"

ci = compute_init(args.device_type, seed=args.seed)
PRESETS = dict(gpu=dict(device_batch_size=32, total_batch_size=524288, eval_every=150, eval_batches=20),
               cpu=dict(device_batch_size=8, total_batch_size=8192, eval_every=50, eval_batches=8))
apply_device_preset(args, PRESETS, ci)

# -----------------------------------------------------------------------------
# input model, data, configuration

model, tokenizer, input_meta = load_input_model(args, ci.device)
max_seq_len = args.max_seq_len or model.config.sequence_len
train_task, train_desc, val_task, val_desc = load_train_val("mid", args)
if args.total_batch_size % max_seq_len:
    raise SystemExit(f"error: --total-batch-size {args.total_batch_size} must be a multiple of the row length "
                     f"{max_seq_len}; e.g. {max_seq_len * max(1, args.total_batch_size // max_seq_len)}")
rows_per_step = args.total_batch_size // max_seq_len
cfg = config_from_args(args, "mid", packed=True, rows_per_step=rows_per_step,
                       model_tag=args.output_tag or input_meta["tag"], max_seq_len=max_seq_len)
source_info = dict(source=dict(stage=args.source, tag=input_meta["tag"], step=input_meta["step"]),
                   data=dict(train=train_desc, val=val_desc))

# -----------------------------------------------------------------------------
# train, report

summary = train_chat_or_exit(model, tokenizer, train_task, val_task, cfg, ci, meta_extra=source_info)
stats = summary["loader_stats"]
get_report().log("Midtraining", [vars(args), source_info["source"], {
    "train data": train_desc, "val data": val_desc, "steps": summary["steps"], "tokens": summary["tokens"],
    "padding fraction": stats["padding"] / max(1, stats["rows"] * (max_seq_len + 1)),
    "val loss": summary["val_loss"], "training time (min)": summary["train_time"] / 60, **summary["evals"],
    "checkpoint": summary["checkpoint"]}], column="mid")
print0(f"checkpoint: {summary['checkpoint']}")
compute_cleanup()
