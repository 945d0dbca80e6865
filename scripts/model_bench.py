"""
Training throughput of our GPT next to a plain minimal GPT of the same shape, timed in the same run, plus
achieved FLOP/s against a matmul peak measured on this machine (CPU) or the H100 bf16 peak (GPU: MFU).

    python -m scripts.model_bench                        # CPU: d4-like (n_embd 256), B=8, T=256, fp32, 2 threads
    python -m scripts.model_bench --grad-accum 2         # as base_train steps on CPU: 4096 tokens per update
    python -m scripts.model_bench --depth 20 --batch-size 32 --seq-len 2048 --vocab-size 65536   # one GPU

Both models take full training steps (forward, backward, optimizer: ours MuonAdamW, plain torch AdamW), and
forward+backward alone. Muon's Newton-Schulz costs a fixed ~16 GFLOP per optimizer step at d4 (~23% of a
B=8 x T=256 forward+backward; bf16 where the CPU has native bf16 matmuls), so it weighs less per token with
--grad-accum, which both models then run alike.
On CPU our loss head is the chunked one of nanochat/head_loss.py; the plain model materializes (B, T, V) logits.
Run it on a quiet machine: two processes with 2 threads each on 2 cores slow both down many times over. The
rounds alternate A, B, A, B and we report each model's best round (load from other processes only ever adds
time, so the fastest round is the least disturbed one, as timeit does) next to the medians. A round is one step
and there are 20: on our shared 2-core box the best of 20 single steps gave 0.89x and 0.88x in two runs, while
the best of 5 rounds of 3 steps had ranged over 0.83-1.11x (one lucky or unlucky round decided it). Goals:
ours >= 1.0x plain, and >= 50% of the matmul peak on CPU / MFU >= 50% on an H100.
"""
import time
import argparse
import statistics

import torch

from nanochat import cpu_linear
from nanochat.common import compute_dtype, keep_freed_memory, resolve_device_type
from nanochat.gpt import GPTConfig, build_model
from nanochat.optim import setup_optimizer
from nanochat.plain_gpt import PlainGPT  # GPT-2 style: learned positions, LayerNorm, GELU

parser = argparse.ArgumentParser(description="Benchmark our GPT's training step against a plain GPT.")
parser.add_argument("--depth", type=int, default=4, help="layers; n_embd = 64*depth, head_dim 128 as in base_train")
parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size")
parser.add_argument("--grad-accum", type=int, default=1,
                    help="forward+backward passes per optimizer step, both models (base_train on CPU: 2, on one GPU: 8)")
parser.add_argument("--steps", type=int, default=1, help="timed steps per round")
parser.add_argument("--rounds", type=int, default=20, help="alternating rounds per model (best and median reported)")
parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (default: autodetect)")
parser.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA")
parser.add_argument("--default-malloc", action="store_true",
                    help="CPU: leave glibc malloc at its defaults (fresh pages faulted in every step) instead of "
                         "keep_freed_memory(), which every nanochat script applies; affects both models alike")
args = parser.parse_args()

torch.set_num_threads(args.threads)
device_type = resolve_device_type(args.device_type)
device = torch.device(device_type)
dtype = compute_dtype(device_type)
malloc_kept = device_type == "cpu" and not args.default_malloc and keep_freed_memory()  # as compute_init does
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True

# -----------------------------------------------------------------------------
# models, optimizers, one training step each

C = args.depth * 64
H = max(1, -(-C // 128))
config = GPTConfig(sequence_len=args.seq_len, vocab_size=args.vocab_size, n_layer=args.depth, n_head=H,
                   n_kv_head=H, n_embd=C)
ours = build_model(config, device, dtype)
ours_opt = setup_optimizer(ours)
plain = PlainGPT(args.vocab_size, args.seq_len, C, H, args.depth).to(device)
plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3, betas=(0.8, 0.95), fused=device_type == "cuda")
ours_fwd, plain_fwd = ours, plain
if device_type == "cuda" and not args.no_compile:
    ours_fwd, plain_fwd = torch.compile(ours), torch.compile(plain)

g = torch.Generator().manual_seed(0)
x = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), generator=g).to(device)
y = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), generator=g).to(device)


def ours_step():
    for _ in range(args.grad_accum):
        ours_fwd(x, y).backward()
    ours_opt.step()
    ours.zero_grad(set_to_none=True)


def plain_step():
    for _ in range(args.grad_accum):
        # the same precision policy for the plain model: bf16 autocast on CUDA (it has no casting Linear)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            loss = plain_fwd(x, y)
        loss.backward()
    plain_opt.step()
    plain.zero_grad(set_to_none=True)


def ours_fwd_bwd():
    ours_fwd(x, y).backward()
    ours.zero_grad(set_to_none=True)


def plain_fwd_bwd():
    with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
        loss = plain_fwd(x, y)
    loss.backward()
    plain.zero_grad(set_to_none=True)


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()


def timed(step_fn, micro_steps=1):
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step_fn()
    sync()
    return args.steps * micro_steps * args.batch_size * args.seq_len / (time.perf_counter() - t0)  # tokens/s


for fn in (ours_step, plain_step, ours_step, plain_step):  # warmup (and compilation)
    fn()
ours_tps, plain_tps, ours_fb, plain_fb = [], [], [], []
for _ in range(args.rounds):
    ours_tps.append(timed(ours_step, args.grad_accum))
    plain_tps.append(timed(plain_step, args.grad_accum))
    ours_fb.append(timed(ours_fwd_bwd))
    plain_fb.append(timed(plain_fwd_bwd))
ours_tok, plain_tok = max(ours_tps), max(plain_tps)  # the least disturbed round of each

# -----------------------------------------------------------------------------
# achieved FLOP/s against a peak

flops_per_token = ours.estimate_flops()
achieved = flops_per_token * ours_tok
if device_type == "cuda":
    peak, peak_name = 989e12, "H100 SXM dense bf16 peak (989 TFLOP/s)"
else:
    # the peak is the faster of the two fp32 matmul kernels we have: torch.mm (MKL) and oneDNN (cpu_linear)
    n = 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    kernels = {"torch.mm": lambda: a @ b}
    if cpu_linear.onednn_available():
        kernels["oneDNN"] = lambda: cpu_linear.linear(a, b)
    rates = {}
    for name, matmul in kernels.items():
        for _ in range(3):
            matmul()
        best = float("inf")
        for _ in range(10):
            t0 = time.perf_counter()
            for _ in range(5):
                matmul()
            best = min(best, (time.perf_counter() - t0) / 5)
        rates[name] = 2 * n**3 / best
    peak_kernel = max(rates, key=rates.get)
    peak = rates[peak_kernel]
    peak_name = (f"measured fp32 {n}x{n} matmul peak ({args.threads} threads, "
                 + ", ".join(f"{k} {v / 1e9:,.0f}" for k, v in rates.items()) + " GFLOP/s)")

print(f"device {device_type}, dtype {dtype}, threads {args.threads}; config {config}")
if device_type == "cpu":
    print(f"glibc malloc: {'keeps freed memory (keep_freed_memory)' if malloc_kept else 'defaults'}")
print(f"B={args.batch_size} T={args.seq_len}, {args.grad_accum} forward+backward per optimizer step; "
      f"{args.rounds} rounds x {args.steps} steps each; the best round of each model")
print(f"ours : {ours_tok:12,.0f} tok/s   (rounds: {', '.join(f'{t:,.0f}' for t in ours_tps)})")
print(f"plain: {plain_tok:12,.0f} tok/s   (rounds: {', '.join(f'{t:,.0f}' for t in plain_tps)})")
print(f"ours / plain = {ours_tok / plain_tok:.2f}x   (goal >= 1.0x; full steps: Muon's Newton-Schulz included)")
print(f"medians: ours / plain = {statistics.median(ours_tps) / statistics.median(plain_tps):.2f}x")
print(f"forward+backward only: ours {max(ours_fb):,.0f} tok/s, plain {max(plain_fb):,.0f} tok/s = "
      f"{max(ours_fb) / max(plain_fb):.2f}x (medians {statistics.median(ours_fb) / statistics.median(plain_fb):.2f}x)")
print(f"ours achieved {achieved / 1e9:,.1f} GFLOP/s ({flops_per_token:,} FLOPs/token) = "
      f"{100 * achieved / peak:.1f}% of the {peak_name}: {peak / 1e9:,.1f} GFLOP/s   (goal >= 50%)")
