"""
Tests for nanochat/plain_gpt.py, the benchmarks' yardstick: its KV cache must be a real one (same logits as
recomputing the whole sequence), or the "plain reference" speedup in scripts/infer_bench.py would mean nothing.

    python -m pytest tests/test_plain_gpt.py -q
"""
import torch

from nanochat.plain_gpt import PlainGPT


def test_plain_cache_matches_recompute_and_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = PlainGPT(50, 32, 32, 2, 2).eval()
    ids = torch.randint(0, 50, (3, 12))
    with torch.no_grad():
        full = model(ids)  # (3, 12, 50)
        cache = []
        steps = [model(ids[:, :5], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0][0].shape == (3, 2, 12, 16)  # (B, H, T, D) keys of layer 0
    targets = torch.randint(0, 50, (3, 12))
    ref = torch.nn.functional.cross_entropy(full.reshape(-1, 50), targets.reshape(-1))
    torch.testing.assert_close(model(ids, targets), ref)
