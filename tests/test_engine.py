"""
Tests for nanochat/engine.py: the KV cache, sampling, tool use, budget forcing and streaming decode.
Run: python -m pytest tests/test_engine.py -q
"""
import torch
import pytest

from nanochat.engine import KVCache

torch.set_num_threads(1)

# -----------------------------------------------------------------------------
# KV cache


def _rand_kv(B, H, T, D, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)


def test_kvcache_insert_returns_history_and_advances_after_last_layer():
    L, B, H, D = 3, 2, 2, 4
    cache = KVCache(B, H, 8, D, L)
    ref = {l: ([], []) for l in range(L)}
    for step, T_new in enumerate([5, 1, 1, 3]):
        pos0 = cache.get_pos()
        for l in range(L):
            assert cache.get_pos() == pos0  # every layer of one pass sees the same offset
            k, v = _rand_kv(B, H, T_new, D, seed=100 * step + l)
            ref[l][0].append(k)
            ref[l][1].append(v)
            keys, values = cache.insert_kv(l, k, v)
            assert keys.shape == (B, H, pos0 + T_new, D)
            torch.testing.assert_close(keys, torch.cat(ref[l][0], dim=2), rtol=0, atol=0)
            torch.testing.assert_close(values, torch.cat(ref[l][1], dim=2), rtol=0, atol=0)
        assert cache.get_pos() == pos0 + T_new


def test_kvcache_grows_without_corrupting_content():
    L, B, H, D = 2, 1, 1, 3
    cache = KVCache(B, H, 4, D, L)  # tiny capacity: forces growth
    ks = []
    for step in range(7):
        T_new = 3
        for l in range(L):
            k, v = _rand_kv(B, H, T_new, D, seed=step * 10 + l)
            if l == 0:
                ks.append(k)
            keys, _ = cache.insert_kv(l, k, v)
    assert cache.seq_len >= 21 and cache.get_pos() == 21
    torch.testing.assert_close(keys.shape[2], 21)
    torch.testing.assert_close(cache.kv[0, 0, :, :, :21], torch.cat(ks, dim=2), rtol=0, atol=0)


def test_kvcache_lazy_dtype_reset_and_bad_shape():
    cache = KVCache(1, 2, 4, 8, 1)
    k = torch.randn(1, 2, 3, 8, dtype=torch.bfloat16)
    keys, _ = cache.insert_kv(0, k, k)
    assert keys.dtype == torch.bfloat16
    cache.reset()
    assert cache.get_pos() == 0
    keys, _ = cache.insert_kv(0, k[:, :, :1], k[:, :, :1])
    assert keys.shape[2] == 1
    with pytest.raises(ValueError, match="kv heads"):
        cache.insert_kv(0, torch.randn(1, 3, 1, 8), torch.randn(1, 3, 1, 8))


def test_kvcache_prefill_clone_and_keep_rows():
    L, H, D = 2, 2, 4
    one = KVCache(1, H, 6, D, L)
    for l in range(L):
        k, v = _rand_kv(1, H, 6, D, seed=l)
        one.insert_kv(l, k, v)
    many = one.clone_rows(3, extra_len=4)
    assert many.get_pos() == 6 and many.batch_size == 3
    for r in range(3):
        torch.testing.assert_close(many.kv[:, :, r, :, :6], one.kv[:, :, 0, :, :6], rtol=0, atol=0)
    # diverge the rows, then drop the middle one
    for l in range(L):
        k = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, H, 1, D).contiguous()
        many.insert_kv(l, k, -k)
    many.keep_rows([2, 0])
    assert many.batch_size == 2 and many.get_pos() == 7
    assert torch.all(many.kv[:, 0, 0, :, 6] == 2) and torch.all(many.kv[:, 0, 1, :, 6] == 0)
    assert torch.all(many.kv[:, 1, 0, :, 6] == -2)
    torch.testing.assert_close(many.kv[:, :, 1, :, :6], one.kv[:, :, 0, :, :6], rtol=0, atol=0)
    # and it keeps working after compaction
    k = torch.ones(2, H, 2, D)
    for l in range(L):
        keys, _ = many.insert_kv(l, k, k)
    assert keys.shape == (2, H, 9, D)
    # prefill into a too-small destination grows it
    small = KVCache(3, H, 2, D, L)
    small.prefill(one)
    assert small.get_pos() == 6
    torch.testing.assert_close(small.kv[:, :, 2, :, :6], one.kv[:, :, 0, :, :6], rtol=0, atol=0)
