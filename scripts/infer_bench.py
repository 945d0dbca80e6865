"""
Inference benchmark for nanochat/engine.py: what the KV cache and batching buy, measured side by side in one run.

It builds a randomly initialized GPT of the given depth (speed does not depend on the weights) and reports:
  1. prefill: latency and tokens/s of running the prompt through the model into a fresh cache;
  2. decode at batch 1, KV cache vs full recomputation of the whole sequence every step (no cache);
  3. the same cache vs no-cache comparison for a plain GPT-2 style model (nanochat/plain_gpt.py) with the plain
     torch.cat cache, timed in the same run: the yardstick for what this machine gives that day;
  4. total generated tokens/s and per-step latency at several batch sizes (one prompt, N sample rows).
Every row generates exactly --new-tokens tokens: the stop tokens' logits are masked out, and the calculator tool
is off, so all configurations do the same work. The runs of 2-4 are interleaved (each round runs every one of
them once) and each keeps its fastest round, so a disturbed stretch of a shared machine hits all of them alike.

    python -m scripts.infer_bench                                   # CPU: d4 (n_embd 256, 4 layers, vocab 8192)
    python -m scripts.infer_bench --threads 1 --batch-sizes 1,4,16  # pin threads for steadier numbers
    python -m scripts.infer_bench --device-type cuda --depth 20 --vocab-size 65536 --batch-sizes 1,8,32,128

Goals (issue 5): cache vs no cache >= 7x at 256 new tokens after a 64-token prompt; batch 16 >= 8x batch 1 in
total tokens/s on CPU. Timings of a busy machine are noise: run it on a quiet one.
"""
import argparse
import time

import torch

from nanochat.common import compute_init, compute_cleanup, print0
from nanochat.engine import Engine, KVCache, sample_next_token
from nanochat.gpt import GPTConfig, build_model
from nanochat.plain_gpt import PlainGPT
from nanochat.tokenizer import Tokenizer, SPLIT_PATTERN

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="KV-cache and batching benchmark for the inference engine")
parser.add_argument("--device-type", type=str, default="", help="cpu|cuda|mps (default: autodetect)")
parser.add_argument("--depth", type=int, default=4, help="number of layers; n_embd = 64 * depth")
parser.add_argument("--head-dim", type=int, default=128, help="attention head size; n_head = ceil(n_embd / head_dim)")
parser.add_argument("--vocab-size", type=int, default=8192, help="model vocabulary size")
parser.add_argument("--prompt-len", type=int, default=64, help="prompt length in tokens")
parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per row")
parser.add_argument("--batch-sizes", type=str, default="1,4,16", help="comma-separated sample-row counts")
parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (the best is kept)")
parser.add_argument("--skip-nocache", action="store_true", help="skip the slow no-cache baseline")
parser.add_argument("--seed", type=int, default=42, help="seed for weights, prompt and sampling")
args = parser.parse_args()
batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

# -----------------------------------------------------------------------------
# model, tokenizer, prompt

ci = compute_init(args.device_type, seed=args.seed)
if args.threads > 0:
    torch.set_num_threads(args.threads)
device = ci.device
n_embd = 64 * args.depth
n_head = -(-n_embd // args.head_dim)
if n_embd % n_head != 0:
    raise SystemExit(f"--depth {args.depth} gives n_embd {n_embd}, not divisible into {n_head} heads; pick another --head-dim")
config = GPTConfig(sequence_len=max(1024, args.prompt_len + args.new_tokens), vocab_size=args.vocab_size,
                   n_layer=args.depth, n_head=n_head, n_kv_head=n_head, n_embd=n_embd)
model = build_model(config, device).eval()
# The engine needs special-token ids only; a byte-level instance of our Tokenizer class provides them without a
# trained tokenizer on disk (ids < 267, all inside the model's vocabulary).
tokenizer = Tokenizer(SPLIT_PATTERN, {bytes([i]): i for i in range(256)})
stop_ids = [tokenizer.encode_special("<|assistant_end|>"), tokenizer.get_bos_token_id()]


class NoStop(torch.nn.Module):
    """The model with its stop tokens' logits at -inf, so that every row generates exactly --new-tokens tokens."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.rotary_len = model, model.config, model.rotary_len
        self.stop = torch.tensor(stop_ids, device=model.get_device())  # made once, not per step

    def get_device(self):
        return self.model.get_device()

    def forward(self, idx, kv_cache=None):
        logits = self.model(idx, kv_cache=kv_cache)  # (B, T, V)
        return logits.index_fill_(-1, self.stop, float("-inf"))


bench_model = NoStop(model)
engine = Engine(bench_model, tokenizer)
g = torch.Generator().manual_seed(args.seed)
prompt = torch.randint(0, 256, (args.prompt_len,), generator=g).tolist()
print0(f"model: depth {args.depth}, n_embd {n_embd}, n_head {n_head}, vocab {args.vocab_size}, "
       f"{model.num_params() / 1e6:.1f}M params, {ci.dtype} on {device} ({torch.get_num_threads()} threads)")
print0(f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens per row, best of {args.repeats}")


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_of(fn):
    """
    Run fn once to warm up, then --repeats times; the fastest run (the least disturbed by the rest of the
    machine). On CPU the process CPU time of that run is kept too: on a shared machine it is the better
    estimate of what a quiet machine would show (with --threads 1 it is close to wall time when idle).
    """
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(args.repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def best_of_each(fns):
    """
    best_of for several functions at once, interleaved: every round runs each of them once, so a stretch of
    disturbance on the machine hits all of them alike and ratios between them stay meaningful.
    """
    for fn in fns.values():
        fn()
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            best[name] = min(best[name], (time.perf_counter() - t0, time.process_time() - c0))
    return best


def show(wall, cpu, work):
    """'X tok/s' for `work` tokens, plus the CPU-time figure on CPU."""
    text = f"{work / wall:10.1f} tok/s"
    return text + (f" (cpu time: {work / cpu:8.1f} tok/s)" if device.type == "cpu" else "")


# -----------------------------------------------------------------------------
# 1) prefill


@torch.inference_mode()
def prefill():
    cache = KVCache(1, n_head, args.prompt_len, config.head_dim, config.n_layer)
    model(torch.tensor([prompt], device=device), kv_cache=cache)


t, c = best_of(prefill)
print0(f"prefill   batch 1: {t * 1000:8.2f} ms for {args.prompt_len} tokens = {show(t, c, args.prompt_len)}")

# -----------------------------------------------------------------------------
# 2) decode at batch 1, KV cache vs full recomputation; 3) the same for a plain GPT-2 style model with the plain
# torch.cat cache, in this same run: what this machine gives today (a batch-1 decode step reads every weight from
# memory, so a busy neighbour's memory traffic moves both ratios); 4) batching: one prompt, N rows.
# All of them are timed interleaved, round by round (best_of_each), so their ratios compare like with like.


def run_engine(num_samples):
    steps = 0
    for _ in engine.generate(prompt, num_samples=num_samples, max_tokens=args.new_tokens, temperature=1.0,
                             use_tools=False, seed=args.seed):
        steps += 1
    assert steps == args.new_tokens, f"expected {args.new_tokens} steps, got {steps}"


@torch.inference_mode()
def run_nocache():
    """The naive way: every new token re-runs the model over the whole sequence so far."""
    gen = torch.Generator(device=device).manual_seed(args.seed)
    ids = torch.tensor([prompt], device=device)  # (1, T)
    for _ in range(args.new_tokens):
        logits = bench_model(ids)[:, -1, :]  # (1, V)
        nxt = sample_next_token(logits, gen, temperature=1.0)  # (1,)
        ids = torch.cat([ids, nxt[:, None]], dim=1)


plain = PlainGPT(args.vocab_size, config.sequence_len, n_embd, n_head, args.depth).to(device).eval()


@torch.inference_mode()
def run_plain(use_cache):
    gen = torch.Generator(device=device).manual_seed(args.seed)
    ids = torch.tensor([prompt], device=device)  # (1, T)
    cache = [] if use_cache else None
    new = ids  # what the model must see this step: the whole sequence, or with a cache only the new token
    with torch.autocast(device.type, dtype=ci.dtype, enabled=ci.dtype != torch.float32):
        for _ in range(args.new_tokens):
            logits = plain(new, cache=cache)[:, -1, :]  # (1, V)
            nxt = sample_next_token(logits.float(), gen, temperature=1.0)[:, None]  # (1, 1)
            ids = torch.cat([ids, nxt], dim=1)
            new = nxt if use_cache else ids


runs = {("batch", b): (lambda b=b: run_engine(b)) for b in sorted(set(batch_sizes) | {1})}
if not args.skip_nocache:
    runs.update({"nocache": run_nocache, "plain cache": lambda: run_plain(True), "plain nocache": lambda: run_plain(False)})
best = best_of_each(runs)

t_cache, c_cache = best[("batch", 1)]
print0(f"decode    batch 1, KV cache: {show(t_cache, c_cache, args.new_tokens)}, {t_cache * 1000 / args.new_tokens:.2f} ms/token")
if not args.skip_nocache:
    t_nocache, c_nocache = best["nocache"]
    print0(f"decode    batch 1, no cache: {show(t_nocache, c_nocache, args.new_tokens)}, "
           f"{t_nocache * 1000 / args.new_tokens:.2f} ms/token")
    print0(f"KV cache speedup: {t_nocache / t_cache:.1f}x wall"
           + (f", {c_nocache / c_cache:.1f}x cpu time" if device.type == "cpu" else "")
           + " (goal >= 7x at 256 new tokens after a 64-token prompt)")
    (tp_cache, cp_cache), (tp_nocache, cp_nocache) = best["plain cache"], best["plain nocache"]
    print0(f"plain GPT-2 style reference, same shape: KV cache {show(tp_cache, cp_cache, args.new_tokens)}, "
           f"no cache {show(tp_nocache, cp_nocache, args.new_tokens)}")
    print0(f"plain reference KV cache speedup: {tp_nocache / tp_cache:.1f}x wall"
           + (f", {cp_nocache / cp_cache:.1f}x cpu time" if device.type == "cpu" else "")
           + f"; ours / plain decode speed with cache: {tp_cache / t_cache:.2f}x")

throughput = {}
for b in batch_sizes:
    t, c = best[("batch", b)]
    throughput[b] = (b * args.new_tokens / t, b * args.new_tokens / c)
    print0(f"generate  batch {b:3d}: {show(t, c, b * args.new_tokens)} total, {t * 1000 / args.new_tokens:.2f} ms/step")
if 1 in throughput:
    for b in batch_sizes:
        if b != 1:
            print0(f"batch {b} / batch 1 throughput: {throughput[b][0] / throughput[1][0]:.1f}x wall"
                   + (f", {throughput[b][1] / throughput[1][1]:.1f}x cpu time" if device.type == "cpu" else "")
                   + (" (goal >= 8x on CPU)" if b == 16 else ""))
compute_cleanup()
