"""
Tests for nanochat/engine.py: the KV cache, sampling, tool use, budget forcing and streaming decode.
Run: python -m pytest tests/test_engine.py -q
"""
from types import SimpleNamespace

import torch
import pytest

from nanochat.engine import KVCache, Engine, StreamDecoder, sample_next_token
from nanochat.gpt import GPTConfig, build_model
from nanochat.tokenizer import Tokenizer, SPECIAL_TOKENS, SPLIT_PATTERN

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


# -----------------------------------------------------------------------------
# fixtures: a tiny tokenizer, tiny random GPTs, and a scripted fake model

CORPUS = ["The quick brown fox jumps over the lazy dog. 12*3 = 36, 7+8 = 15. " * 4,
          "Let me think about this. Wait, that is not right. Final Answer: 42"] * 10


@pytest.fixture(scope="module")
def tok():
    try:
        return Tokenizer.train_from_iterator(iter(CORPUS), vocab_size=256 + len(SPECIAL_TOKENS) + 32)
    except (ImportError, AttributeError):  # rustbpe extension not built here: a byte-level tokenizer will do
        return Tokenizer(SPLIT_PATTERN, {bytes([i]): i for i in range(256)})


def tiny_gpt(vocab_size, n_kv_head, seed=0):
    config = GPTConfig(sequence_len=64, vocab_size=vocab_size, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32)
    model = build_model(config, "cpu", torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the real init zeroes lm_head (uniform logits): randomize everything instead
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


@pytest.fixture(scope="module", params=[4, 2], ids=["MHA", "GQA"])
def gpt(request, tok):
    return tiny_gpt(tok.get_vocab_size(), n_kv_head=request.param)


class ScriptedModel(torch.nn.Module):
    """
    A fake GPT whose next token is a Python function of each row's history. It stores the token ids as its
    "keys" in the KV cache, so the history it sees per row is exactly what the engine's cache holds (cloning
    and row compaction included). next_fn(history) returns a token id, or a list of ids to pick uniformly.
    """

    def __init__(self, next_fn, vocab_size):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab_size, n_layer=1, n_head=1, n_kv_head=1, n_embd=1)
        self.next_fn = next_fn
        self.batch_sizes = []

    def forward(self, idx, kv_cache=None):
        B, T = idx.shape
        self.batch_sizes.append(B)
        x = idx.float().view(B, 1, T, 1)
        history, _ = kv_cache.insert_kv(0, x, x)  # (B, 1, T_cache, 1)
        logits = torch.full((B, T, self.config.vocab_size), -1e4)
        for b in range(B):
            choice = self.next_fn(history[b, 0, :, 0].long().tolist())
            logits[b, -1, choice if isinstance(choice, list) else [choice]] = 0.0
        return logits


def sid(tok, name):
    return tok.encode_special(name)


# -----------------------------------------------------------------------------
# engine vs naive full recomputation


def naive_greedy(model, prompt, max_tokens, stops):
    ids, out = list(prompt), []
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids]))[0, -1]  # recompute the whole sequence, no cache
        t = int(logits.argmax())
        out.append(t)
        ids.append(t)
        if t in stops:
            break
    return out


@pytest.mark.parametrize("text, num_samples", [("The quick", 1), ("12*3 =", 3), ("Wait, that", 5)])
def test_greedy_with_cache_equals_naive(tok, gpt, text, num_samples):
    prompt = tok.encode(text, prepend="<|bos|>")
    stops = {sid(tok, "<|assistant_end|>"), sid(tok, "<|bos|>")}
    ref = naive_greedy(gpt, prompt, 32, stops)  # 5 rows x 32 tokens: the engine's packed-weight path on CPU
    results, masks = Engine(gpt, tok).generate_batch(prompt, num_samples=num_samples, max_tokens=32, temperature=0.0,
                                                     use_tools=False, include_stop=True)
    for row, mask in zip(results, masks):
        assert row[:len(prompt)] == prompt and row[len(prompt):] == ref
        assert mask == [0] * len(prompt) + [1] * len(ref)


def test_batched_decode_uses_packed_weights_and_drops_them(tok, gpt, monkeypatch):
    # several rows on CPU decode with oneDNN-packed weights (gpt.packed_weights): used, the same greedy
    # tokens as the naive loop (test above), and gone afterwards, also when the caller stops early
    from nanochat import cpu_linear
    from nanochat.gpt import Linear
    if not cpu_linear.onednn_available():
        pytest.skip("oneDNN matmul not available in this torch build")
    calls = []
    real = cpu_linear.packed_linear
    monkeypatch.setattr(cpu_linear, "packed_linear", lambda *a: calls.append(1) or real(*a))
    prompt = tok.encode("12*3 =", prepend="<|bos|>")
    Engine(gpt, tok).generate_batch(prompt, num_samples=3, max_tokens=40, temperature=0.0)  # 3 rows: not packed
    Engine(gpt, tok).generate_batch(prompt, num_samples=8, max_tokens=4, temperature=0.0)  # 4 tokens: not worth it
    assert not calls
    gen = Engine(gpt, tok).generate(prompt, num_samples=4, max_tokens=32, temperature=0.0, use_tools=False)
    next(gen), next(gen)
    linears = [m for m in gpt.modules() if isinstance(m, Linear)]
    assert calls and all(m.packed is not None for m in linears)
    gen.close()  # abandoned mid-generation
    assert all(m.packed is None and m.packed_users == 0 for m in linears)


def test_cached_logits_equal_uncached(tok, gpt):
    ids = torch.tensor([tok.encode("The quick brown fox jumps", prepend="<|bos|>")[:12]])
    full = gpt(ids)  # (1, T, V)
    cfg = gpt.config
    cache = KVCache(1, cfg.n_kv_head, 4, cfg.n_embd // cfg.n_head, cfg.n_layer)  # small: growth on the way
    pieces = [gpt(ids[:, :6], kv_cache=cache)]  # prefill: causal
    pieces.append(gpt(ids[:, 6:9], kv_cache=cache))  # a chunk after a prefix
    for t in range(9, ids.size(1)):  # single-token decode steps
        pieces.append(gpt(ids[:, t:t + 1], kv_cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# sampling


def test_seeds_reproduce_and_rows_differ(tok, gpt):
    engine, prompt = Engine(gpt, tok), tok.encode("The", prepend="<|bos|>")
    kw = dict(num_samples=6, max_tokens=12, temperature=1.0, use_tools=False)
    a, _ = engine.generate_batch(prompt, seed=1, **kw)
    b, _ = engine.generate_batch(prompt, seed=1, **kw)
    c, _ = engine.generate_batch(prompt, seed=2, **kw)
    assert a == b and a != c
    assert len({tuple(r) for r in a}) > 1
    assert len({r[len(prompt)] for r in a}) > 1  # each row sampled its own first token from the prefill


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    assert sample_next_token(logits, torch.Generator().manual_seed(0), temperature=0.0).tolist() == [1, 0]


def test_top_k_and_top_p_stay_in_the_allowed_set():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20000, 4)  # a rigged distribution, sampled 20000 times at once
    g = torch.Generator().manual_seed(0)
    cases = [
        (dict(top_k=2), {0, 1}, torch.tensor([0.5, 0.3, 0, 0]) / 0.8),
        (dict(top_k=3), {0, 1, 2}, torch.tensor([0.5, 0.3, 0.15, 0]) / 0.95),
        (dict(top_p=0.7), {0, 1}, torch.tensor([0.5, 0.3, 0, 0]) / 0.8),  # 0.5 < 0.7 <= 0.5+0.3
        (dict(top_p=0.85), {0, 1, 2}, torch.tensor([0.5, 0.3, 0.15, 0]) / 0.95),
        (dict(top_p=0.4), {0}, torch.tensor([1.0, 0, 0, 0])),  # the top token always survives
        (dict(top_k=3, top_p=0.7), {0, 1}, torch.tensor([0.5, 0.3, 0, 0]) / 0.8),
        (dict(), {0, 1, 2, 3}, probs),
    ]
    for kw, allowed, expected in cases:
        samples = sample_next_token(logits, g, temperature=1.0, **kw)
        assert set(samples.tolist()) == allowed, kw  # nothing outside, and everything inside does occur
        freq = torch.bincount(samples, minlength=4).float() / samples.numel()
        torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_bad_arguments_are_clear_errors(tok, gpt):
    engine = Engine(gpt, tok)
    with pytest.raises(ValueError, match="temperature"):
        engine.generate_batch([1, 2], temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate_batch([1, 2], top_p=0.0)
    with pytest.raises(ValueError, match="list of token ids"):
        engine.generate_batch("hello")
    with pytest.raises(ValueError, match="vocabulary"):
        engine.generate_batch([10**6])


def test_finished_rows_leave_the_batch(tok):
    end, x = sid(tok, "<|assistant_end|>"), tok.encode("x")[0]
    model = ScriptedModel(lambda h: [end, x, x], tok.get_vocab_size())  # each row stops with probability 1/3
    steps = list(Engine(model, tok).generate([x, x], num_samples=8, max_tokens=40, temperature=1.0, seed=3))
    alive_after = []
    finished = set()
    for column, _ in steps:
        for s, t in enumerate(column):
            if t == end:
                finished.add(s)
        alive_after.append(8 - len(finished))
    assert model.batch_sizes[0] == 1  # the prompt is prefilled once, not once per row
    assert model.batch_sizes[1:] == alive_after[:-1]  # every decode step ran only the unfinished rows
    assert len(set(alive_after)) > 2  # rows really did finish at different times


# -----------------------------------------------------------------------------
# tool use


def tool_script(tok, prompt, expr, then):
    """A model that writes <|python_start|>expr<|python_end|>, then after a tool output `then`, then stops."""
    call = [sid(tok, "<|python_start|>")] + tok.encode(expr) + [sid(tok, "<|python_end|>")]
    out_end, end = sid(tok, "<|output_end|>"), sid(tok, "<|assistant_end|>")

    def next_fn(h):
        gen = h[len(prompt):]
        if out_end in gen:
            after = gen[gen.index(out_end) + 1:]
            return (then + [end])[len(after)]
        return call[len(gen)] if len(gen) < len(call) else end
    return call, next_fn


def test_tool_output_is_forced_with_mask_zero(tok):
    prompt = tok.encode("q", prepend="<|bos|>")
    then = tok.encode(" ok")
    call, next_fn = tool_script(tok, prompt, "12*3", then)
    engine = Engine(ScriptedModel(next_fn, tok.get_vocab_size()), tok)
    results, masks = engine.generate_batch(prompt, num_samples=2, max_tokens=50, temperature=1.0)
    forced = [sid(tok, "<|output_start|>")] + tok.encode("36") + [sid(tok, "<|output_end|>")]
    for row, mask in zip(results, masks):
        assert row == prompt + call + forced + then
        assert mask == [0] * len(prompt) + [1] * len(call) + [0] * len(forced) + [1] * len(then)


def test_tool_call_opened_by_the_prompt_is_evaluated(tok):
    prompt = tok.encode("q", prepend="<|bos|>") + [sid(tok, "<|python_start|>")] + tok.encode("7+")
    rest = tok.encode("8") + [sid(tok, "<|python_end|>")]
    out_end, end = sid(tok, "<|output_end|>"), sid(tok, "<|assistant_end|>")

    def next_fn(h):
        gen = h[len(prompt):]
        return end if out_end in gen else (rest[len(gen)] if len(gen) < len(rest) else end)
    results, masks = Engine(ScriptedModel(next_fn, tok.get_vocab_size()), tok).generate_batch(prompt, max_tokens=30)
    forced = [sid(tok, "<|output_start|>")] + tok.encode("15") + [out_end]
    assert results[0] == prompt + rest + forced
    assert masks[0][len(prompt):] == [1] * len(rest) + [0] * len(forced)


def test_tool_off_or_refused_forces_nothing(tok):
    prompt = tok.encode("q", prepend="<|bos|>")
    for expr, use_tools in (("12*3", False), ("9**9**9", True), ("__import__('os')", True)):
        call, next_fn = tool_script(tok, prompt, expr, [])
        engine = Engine(ScriptedModel(next_fn, tok.get_vocab_size()), tok)
        results, masks = engine.generate_batch(prompt, max_tokens=50, use_tools=use_tools)
        assert results[0] == prompt + call and sid(tok, "<|output_start|>") not in results[0]
        assert masks[0] == [0] * len(prompt) + [1] * len(call)


# -----------------------------------------------------------------------------
# thinking budgets (s1 budget forcing)


def think_span(tok, row):
    start, end = sid(tok, "<|think_start|>"), sid(tok, "<|think_end|>")
    i = row.index(start)
    return row[i + 1:row.index(end, i)]


def test_max_think_budget_forces_end_and_answer_prefix(tok):
    prompt = tok.encode("q", prepend="<|bos|>")
    start, end, stop, x = sid(tok, "<|think_start|>"), sid(tok, "<|think_end|>"), sid(tok, "<|assistant_end|>"), tok.encode("x")[0]

    def thinks_forever(h):
        gen = h[len(prompt):]
        return start if not gen else (stop if end in gen else x)
    engine = Engine(ScriptedModel(thinks_forever, tok.get_vocab_size()), tok)
    prefix = tok.encode("Final Answer:")
    for budget in (1, 5):
        results, masks = engine.generate_batch(prompt, num_samples=2, max_tokens=60, max_think_tokens=budget,
                                               answer_prefix="Final Answer:")
        gen, m = results[0][len(prompt):], masks[0][len(prompt):]
        assert gen == [start] + [x] * budget + [end] + prefix
        assert m == [1] * (1 + budget) + [0] * (1 + len(prefix))
    # a prompt that already opened the thinking span counts from there
    results, _ = engine.generate_batch(prompt + [start, x, x], max_tokens=60, max_think_tokens=3)
    assert results[0][len(prompt):] == [start, x, x, x, end]


def test_min_think_budget_inserts_wait_max_waits_times(tok):
    prompt = tok.encode("q", prepend="<|bos|>")
    start, end, stop, x = sid(tok, "<|think_start|>"), sid(tok, "<|think_end|>"), sid(tok, "<|assistant_end|>"), tok.encode("x")[0]
    wait = tok.encode("Wait")

    def quits_early(h):  # ends its thinking two tokens after <|think_start|> or after each "Wait"
        gen = h[len(prompt):]
        if not gen:
            return start
        if end in gen:
            return stop
        marks = [i for i in range(len(gen)) if gen[i] == start or gen[max(0, i - len(wait) + 1):i + 1] == wait]
        return end if len(gen) - 1 - marks[-1] >= 2 else x
    engine = Engine(ScriptedModel(quits_early, tok.get_vocab_size()), tok)
    for max_waits in (1, 3):
        results, masks = engine.generate_batch(prompt, max_tokens=80, min_think_tokens=100, max_waits=max_waits)
        gen, m = results[0][len(prompt):], masks[0][len(prompt):]
        assert tok.decode(gen) == "<|think_start|>xx" + "Waitxx" * max_waits + "<|think_end|>"
        assert sum(1 for i in range(len(gen)) if gen[i:i + len(wait)] == wait) == max_waits
        assert m == [1, 1, 1] + ([0] * len(wait) + [1, 1]) * max_waits + [1]
    # min and max together: the max budget is never exceeded, whatever the Waits want
    results, _ = engine.generate_batch(prompt, max_tokens=80, min_think_tokens=100, max_waits=50, max_think_tokens=9)
    assert len(think_span(tok, results[0])) == 9


def test_real_model_never_exceeds_think_budget(tok, gpt):
    prompt = tok.encode("q", prepend="<|bos|>") + [sid(tok, "<|think_start|>")]
    results, _ = Engine(gpt, tok).generate_batch(prompt, num_samples=4, max_tokens=30, temperature=1.0,
                                                 max_think_tokens=7, use_tools=False)
    for row in results:
        gen = row[len(prompt):]
        end = sid(tok, "<|think_end|>")
        assert (gen.index(end) if end in gen else len(gen)) <= 7


# -----------------------------------------------------------------------------
# streaming decode


def test_stream_decoder_emits_whole_characters(tok):
    text = "héllo 🙂 日本語 🚀!"
    ids = tok.encode(text)
    assert "\ufffd" in "".join(tok.decode([t]) for t in ids)  # naive per-token decoding breaks characters
    dec = StreamDecoder(tok)
    pieces = [dec.push(t) for t in ids]
    assert "".join(pieces) + dec.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # some tokens completed no character and were held back
    end = sid(tok, "<|assistant_end|>")
    assert StreamDecoder(tok).push(end) == "<|assistant_end|>" and StreamDecoder(tok, skip_special=True).push(end) == ""
