"""
Is the data loader fast enough? Prints, side by side in one run, the loader's throughput (tokens/s at 1 and 2
tokenizer threads) and the tokens/s one training step of a small model consumes on this machine, plus the
GPU target: a d20 step consumes about 80k tokens/s per H100, so the loader should make >= 800k tokens/s per
rank (10x headroom) or hide behind the step (it does: batches are built while the GPU runs the last step).
With --waste it also measures the fraction of tokens cropped by BOS-aligned best-fit packing at T=2048, 256.

    python -m scripts.loader_bench                         # CPU: loader vs a d4-shaped model step (B=8, T=256)
    python -m scripts.loader_bench --waste                 # + cropped-token fraction at T=2048 and T=256
    python -m scripts.loader_bench --device-type cuda --depth 20 --seq-len 2048 --batch-size 32   # on a GPU

Needs the data (`python -m nanochat.dataset --local`) and a tokenizer (`python -m scripts.tok_train`).
"""
import time
import argparse

import torch

from nanochat.common import compute_init, compute_cleanup, print0
from nanochat.tokenizer import get_tokenizer_or_exit
from nanochat.dataloader import DataLoader

parser = argparse.ArgumentParser(description="Loader throughput next to a training step's token consumption")
parser.add_argument("--batch-size", type=int, default=8, help="rows per batch (B)")
parser.add_argument("--seq-len", type=int, default=256, help="tokens per row (T) of the timed training step")
parser.add_argument("--loader-seq-lens", type=str, default="256,2048", help="comma-separated T values to time the loader at")
parser.add_argument("--threads", type=str, default="1,2", help="comma-separated tokenizer thread counts to time")
parser.add_argument("--loader-tokens", type=int, default=2_000_000, help="tokens to draw from the loader per setting")
parser.add_argument("--depth", type=int, default=4, help="model depth for the step timing (n_embd = 64 * depth)")
parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up step)")
parser.add_argument("--device-type", type=str, default="cpu", help="cpu | cuda | mps for the training step")
parser.add_argument("--waste", action="store_true", help="also measure the cropped-token fraction at T=2048 and 256")
parser.add_argument("--waste-rows", type=int, default=4000, help="rows to pack per --waste measurement")
parser.add_argument("--gpu-step-tokens-per-s", type=float, default=80_000, help="tokens/s a d20 step eats per H100")
args = parser.parse_args()

torch.set_num_threads(max(1, torch.get_num_threads()))
info = compute_init(args.device_type)
tokenizer = get_tokenizer_or_exit()
B, T = args.batch_size, args.seq_len

# -----------------------------------------------------------------------------
# loader throughput: tokens per second of (B, T) batches, after one warm-up batch (fills the doc buffer)


def loader_tokens_per_s(seq_len, threads):
    loader = DataLoader(tokenizer, B, seq_len, split="train", device="cpu", tokenizer_threads=threads)
    next(loader)
    n = max(1, args.loader_tokens // (B * seq_len))
    t0 = time.perf_counter()
    for _ in range(n):
        next(loader)
    return n * B * seq_len / (time.perf_counter() - t0)


thread_counts = [int(k) for k in args.threads.split(",")]
loader_rates = {(t, k): loader_tokens_per_s(t, k) for t in map(int, args.loader_seq_lens.split(",")) for k in thread_counts}

# -----------------------------------------------------------------------------
# training step consumption: forward + backward + optimizer of a GPT of the given depth


def step_tokens_per_s():
    from nanochat.gpt import GPTConfig, build_model
    from nanochat.optim import setup_optimizer
    width = 64 * args.depth
    config = GPTConfig(sequence_len=T, vocab_size=tokenizer.get_vocab_size(), n_layer=args.depth,
                       n_head=max(1, width // 128), n_kv_head=max(1, width // 128), n_embd=width)
    model = build_model(config, info.device)
    opt = setup_optimizer(model)
    x = torch.randint(0, config.vocab_size, (B, T), device=info.device)
    y = torch.randint(0, config.vocab_size, (B, T), device=info.device)

    def step():
        loss = model(x, y)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
    step()
    if info.device_type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if info.device_type == "cuda":
        torch.cuda.synchronize()
    return args.steps * B * T / (time.perf_counter() - t0), model.num_params()


step_rate, n_params = step_tokens_per_s()

# -----------------------------------------------------------------------------
# report

print0(f"loader vs step, B={B} T={T}, vocab {tokenizer.get_vocab_size()}, torch threads {torch.get_num_threads()}")
print0(f"  training step (depth {args.depth}, {n_params / 1e6:.1f}M params, {info.device_type}): {step_rate:,.0f} tok/s")
target = 10 * args.gpu_step_tokens_per_s
for (seq_len, threads), rate in loader_rates.items():
    print0(f"  loader T={seq_len}, {threads} tokenizer thread(s): {rate:,.0f} tok/s = {rate / step_rate:.1f}x the step here, "
           f"{rate / args.gpu_step_tokens_per_s:.1f}x a d20 H100 step ({'meets' if rate >= target else 'below'} "
           f"the 10x target of {target:,.0f} tok/s)")
print0("  (the loader also overlaps the GPU step: batches are built while the asynchronously launched step runs)")

if args.waste:
    for t in (2048, 256):
        loader = DataLoader(tokenizer, 1, t, split="train", device="cpu", tokenizer_threads=max(thread_counts))
        for _ in range(args.waste_rows):
            next(loader)
        s = loader.stats
        print0(f"  packing waste at T={t}: {s['tokens_cropped'] / (s['tokens_cropped'] + s['tokens_used']):.1%} "
               f"of tokenized tokens cropped ({s['rows']} rows)")
compute_cleanup()
