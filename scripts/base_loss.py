"""
Train/val bits-per-byte of a base checkpoint, and a few greedy samples.

    python -m scripts.base_loss                         # latest base checkpoint
    python -m scripts.base_loss --eval-tokens 1048576   # more tokens, less noise
    torchrun --standalone --nproc_per_node=8 -m scripts.base_loss

bpb counts the loss per UTF-8 byte (special tokens are 0 bytes), so it compares across tokenizers.
"""
import argparse

from nanochat.common import compute_init, compute_cleanup, print0, require_positive
from nanochat.checkpoint import load_model_or_exit
from nanochat.dataloader import DataLoader
from nanochat.loss_eval import evaluate_bpb
from nanochat.tokenizer import get_token_bytes
from nanochat.report import get_report

parser = argparse.ArgumentParser(description="Bits per byte and samples of a base model checkpoint.")
parser.add_argument("--model-tag", type=str, default=None, help="checkpoint tag under checkpoints/base (default: newest)")
parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest complete)")
parser.add_argument("--device-batch-size", type=int, default=8, help="sequences per forward pass per process")
parser.add_argument("--eval-tokens", type=int, default=65536, help="tokens per split, over all processes")
parser.add_argument("--max-tokens", type=int, default=24, help="tokens per sample")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
args = parser.parse_args()
require_positive(parser, args, ["device_batch_size", "eval_tokens", "max_tokens"])

ci = compute_init(args.device_type)
model, tokenizer, meta = load_model_or_exit("base", ci.device, tag=args.model_tag, step=args.step)
T = model.config.sequence_len
token_bytes = get_token_bytes(tokenizer, ci.device)
steps = max(1, args.eval_tokens // (args.device_batch_size * T * ci.world_size))
print0(f"base/{meta['tag']} step {meta['step']}: {steps} batches of {args.device_batch_size}x{T} per split")
bpb = {}
for split in ("train", "val"):
    loader = DataLoader(tokenizer, args.device_batch_size, T, split, device=ci.device)
    bpb[split] = evaluate_bpb(model, loader, steps, token_bytes)
    print0(f"{split} bpb: {bpb[split]:.4f}")

samples = []
if ci.rank == 0:
    for prompt in ["The capital of France is", "The chemical symbol of gold is", "The planets of the solar "
                   "system are:", "If 5*x + 3 = 13, then x is", "The opposite of hot is"]:
        ids = tokenizer.encode(prompt, prepend=tokenizer.get_bos_token_id())
        sample = tokenizer.decode(ids + list(model.generate(ids, max_tokens=args.max_tokens)))
        samples.append(sample)
        print0("sample:", sample)
get_report().log("Base model loss", [vars(args), {"train bpb": bpb["train"], "val bpb": bpb["val"]},
                                     "samples:\n" + "\n".join(f"- {s!r}" for s in samples)])
compute_cleanup()
