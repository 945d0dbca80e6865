"""
A plain GPT-2 style model, the yardstick of our benchmarks (scripts/model_bench.py, scripts/infer_bench.py):
learned positions, LayerNorm, GELU, one fused qkv matmul, nothing else. It is what a minimal implementation
looks like, so "ours vs plain, timed in the same run" separates what our code costs from what the machine
gives that day. It is never trained for real and nothing else in nanochat uses it.

    model = PlainGPT(vocab_size, max_len, n_embd, n_head, n_layer)
    loss = model(idx, targets)                   # training
    cache = []                                   # inference: a list of (k, v) per layer, grown by torch.cat
    logits = model(prompt, cache=cache)          # (B, T, V); then model(next_ids, cache=cache) per token
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# one block


class PlainBlock(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(C, bias=False), nn.LayerNorm(C, bias=False)
        self.qkv, self.proj = nn.Linear(C, 3 * C, bias=False), nn.Linear(C, C, bias=False)
        self.fc, self.out = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)

    def forward(self, x, layer_cache=None):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4)  # (B, H, T, D)
        if layer_cache is not None:  # the plain KV cache: append this step's keys and values
            if layer_cache:
                k, v = torch.cat([layer_cache[0], k], dim=2), torch.cat([layer_cache[1], v], dim=2)
            layer_cache[:] = [k, v]
        # causal within the new tokens; a single new token sees the whole cache
        y = F.scaled_dot_product_attention(q, k, v, is_causal=q.size(2) == k.size(2))
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


# -----------------------------------------------------------------------------
# the model


class PlainGPT(nn.Module):
    def __init__(self, V, T, C, H, L):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList([PlainBlock(C, H) for _ in range(L)])
        self.ln_f, self.head = nn.LayerNorm(C, bias=False), nn.Linear(C, V, bias=False)

    def forward(self, idx, targets=None, cache=None):
        """Loss with targets; else logits (B, T, V). cache: a list that this call fills / extends per layer."""
        if cache is not None and not cache:
            cache.extend([] for _ in self.blocks)
        t0 = cache[0][0].size(2) if cache and cache[0] else 0  # tokens already in the cache
        x = self.wte(idx) + self.wpe(torch.arange(t0, t0 + idx.size(1), device=idx.device))
        for i, b in enumerate(self.blocks):
            x = b(x, cache[i] if cache is not None else None)
        logits = self.head(self.ln_f(x)).float()
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
