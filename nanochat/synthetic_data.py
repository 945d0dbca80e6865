"""
A deterministic toy language for tests, benchmarks and smoke runs that need no corpus or tokenizer.

Each row is an arithmetic progression of token ids, t_i = (start + stride * i) mod V with stride in 1..4,
with 10% of tokens replaced by random ones: easy enough that a tiny model's loss drops fast, noisy enough that
it never reaches zero. Batch k of (split, rank) is a pure function of (seed, split, rank, k), so the loader's
whole state is one counter: exact resume is trivial and ranks see different data.

    loader = SyntheticLoader(vocab_size=512, batch_size=8, seq_len=256, split="train")
    x, y = next(loader)            # (B, T) inputs, (B, T) targets = inputs shifted by one
"""
import torch


class SyntheticLoader:
    def __init__(self, vocab_size, batch_size, seq_len, split="train", device="cpu", seed=0, rank=0,
                 world_size=1):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.V, self.B, self.T, self.device = vocab_size, batch_size, seq_len, device
        self.stream = (seed * 1_000_003 + (split == "val") * 7_919 + rank) * 65_537  # distinct per split/rank
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self):
        g = torch.Generator().manual_seed((self.stream + self.step) % 2**63)
        self.step += 1
        start = torch.randint(0, self.V, (self.B, 1), generator=g)
        stride = torch.randint(1, 5, (self.B, 1), generator=g)
        seq = (start + stride * torch.arange(self.T + 1)) % self.V  # (B, T+1)
        noise = torch.rand(self.B, self.T + 1, generator=g) < 0.1
        seq = torch.where(noise, torch.randint(0, self.V, seq.shape, generator=g), seq)
        return seq[:, :-1].to(self.device), seq[:, 1:].to(self.device)

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = int(state["step"])
