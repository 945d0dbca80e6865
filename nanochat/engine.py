"""
Inference engine: a KV cache, batched sampling with tool use and thinking budgets, and streaming decode.

Everything that samples from a model (chat_cli, chat_web, chat_eval, the RL family) goes through here, so the
model file stays a pure function of tokens and the engine owns all the bookkeeping of generation.

    from nanochat.engine import Engine, StreamDecoder
    engine = Engine(model, tokenizer)                       # any device; the cache follows the model's dtype
    prompt = tokenizer.render_for_completion(conversation)  # ends with <|assistant_start|>
    results, masks = engine.generate_batch(prompt, num_samples=8, max_tokens=256, temperature=1.0, top_k=50)
    # results[i] = prompt + completion (stop token left out unless include_stop=True)
    # masks[i]   = 0 on the prompt and on tokens the engine forced (tool outputs, budget forcing), 1 on sampled

How a call runs: prefill the prompt once (batch 1), clone its KV cache to num_samples rows, let every row
sample its own first token from the prefill logits, then decode all rows together, one token per row per
step; rows that finish are dropped from the cache and the batch, so they cost nothing further.
Tests: python -m pytest tests/test_engine.py -q     Benchmark: python -m scripts.infer_bench

The KV cache contract with nanochat/gpt.py:
    pos = kv_cache.get_pos()                  # rotary offset for the new tokens, read before inserting
    k, v = kv_cache.insert_kv(layer_idx, k, v) # k, v: (B, H_kv, T_new, D) in; (B, H_kv, pos + T_new, D) views out
    the cache advances pos by T_new after the last layer has inserted.
"""
import codecs
from collections import deque

import torch

from nanochat.calculator import calculate
from nanochat.gpt import packed_weights

# -----------------------------------------------------------------------------
# KV cache


class KVCache:
    """
    Keys and values of every layer, preallocated as one tensor of shape (L, 2, B, H_kv, T_max, D) so that a
    decode step is an in-place slice write instead of a torch.cat of the whole history (which would make each
    step O(T) in allocations). When a sequence outgrows T_max the buffer is replaced by a larger one and the
    content copied over, so callers never have to know the final length up front.

    The buffer is allocated lazily on the first insert (unless both device and dtype are given) so it takes
    the dtype and device of the keys the model actually produces, e.g. bf16 under autocast.

    All rows share one position: rows of a batch are prompts of equal length (the engine prefills one prompt
    once and clones it to N rows), and finished rows are dropped with keep_rows() rather than padded.
    """

    def __init__(self, batch_size, num_heads, seq_len, head_dim, num_layers, device=None, dtype=None):
        self.batch_size = batch_size
        self.num_heads = num_heads  # key/value heads (n_kv_head; fewer than query heads under GQA)
        self.seq_len = seq_len  # current capacity T_max; grows on demand
        self.head_dim = head_dim
        self.num_layers = num_layers
        self.pos = 0
        self.kv = None  # (L, 2, B, H_kv, T_max, D) once allocated
        if device is not None and dtype is not None:
            self._allocate(torch.device(device), dtype)

    def _allocate(self, device, dtype):
        shape = (self.num_layers, 2, self.batch_size, self.num_heads, self.seq_len, self.head_dim)
        self.kv = torch.empty(shape, device=device, dtype=dtype)

    def get_pos(self):
        return self.pos

    def reset(self):
        """Forget the content (the buffer is kept for reuse)."""
        self.pos = 0

    def _grow(self, needed):
        # Round the new capacity up to a multiple of 1024 (and at least double) so growth happens O(log T)
        # times; copy only the filled prefix [:pos], which is all that is meaningful.
        new_len = max(needed, 2 * self.seq_len)
        new_len = (new_len + 1023) // 1024 * 1024
        old = self.kv
        self.seq_len = new_len
        self._allocate(old.device, old.dtype)
        self.kv[..., : self.pos, :].copy_(old[..., : self.pos, :])

    def insert_kv(self, layer_idx, k, v):
        """
        Write this step's keys/values for one layer at [pos, pos + T_new) and return views of everything so
        far, (B, H_kv, pos + T_new, D). pos advances after the last layer, so every layer of one forward pass
        sees the same offset.
        """
        B, H, T_new, D = k.shape
        if (B, H, D) != (self.batch_size, self.num_heads, self.head_dim):
            raise ValueError(f"KVCache got k of shape {tuple(k.shape)} but was built for batch {self.batch_size}, "
                             f"{self.num_heads} kv heads, head_dim {self.head_dim}; build the cache to match the model")
        if self.kv is None:
            self._allocate(k.device, k.dtype)
        t0, t1 = self.pos, self.pos + T_new
        if t1 > self.seq_len:
            self._grow(t1)
        keys, values = self.kv[layer_idx, 0], self.kv[layer_idx, 1]  # (B, H_kv, T_max, D) each
        keys[:, :, t0:t1] = k
        values[:, :, t0:t1] = v
        if layer_idx == self.num_layers - 1:
            self.pos = t1
        return keys[:, :, :t1], values[:, :, :t1]  # (B, H_kv, t1, D)

    # -------------------------------------------------------------------------
    # prefill once, sample many: copying and reshaping caches

    def prefill(self, other):
        """
        Copy another cache's content into this one, broadcasting its rows: a batch-1 cache filled with a
        prompt becomes the starting state of N sample rows without running the prompt N times.
        """
        if other.kv is None or other.pos == 0:
            raise ValueError("KVCache.prefill: the source cache is empty; run the prompt through the model first")
        if (other.num_layers, other.num_heads, other.head_dim) != (self.num_layers, self.num_heads, self.head_dim):
            raise ValueError("KVCache.prefill: source and destination caches were built for different models")
        if other.batch_size not in (1, self.batch_size):
            raise ValueError(f"KVCache.prefill: cannot broadcast {other.batch_size} rows to {self.batch_size}")
        if self.kv is None or self.kv.device != other.kv.device or self.kv.dtype != other.kv.dtype:
            self.seq_len = max(self.seq_len, other.pos)
            self._allocate(other.kv.device, other.kv.dtype)
        if other.pos > self.seq_len:
            self.pos = 0  # nothing of ours is worth copying during the grow
            self._grow(other.pos)
        self.kv[..., : other.pos, :].copy_(other.kv[..., : other.pos, :])  # batch dim broadcasts 1 -> N
        self.pos = other.pos

    def clone_rows(self, num_rows, extra_len=0):
        """A new cache of num_rows rows, each a copy of this batch-1 cache, with room for extra_len more tokens."""
        if self.batch_size != 1:
            raise ValueError("KVCache.clone_rows: only a batch-1 cache can be cloned to N rows")
        out = KVCache(num_rows, self.num_heads, self.pos + extra_len, self.head_dim, self.num_layers)
        out.prefill(self)
        return out

    def keep_rows(self, row_idx):
        """
        Keep only the given rows (a list or LongTensor of indices, in the order wanted). The engine calls this
        when rows finish so that later decode steps spend no compute or memory on them.
        """
        if self.kv is None:
            raise ValueError("KVCache.keep_rows: the cache is empty")
        idx = torch.as_tensor(row_idx, dtype=torch.long, device=self.kv.device)
        kept = self.kv[..., : self.pos, :].index_select(2, idx)  # (L, 2, B', H_kv, pos, D): only the filled prefix
        # Reuse the same buffer (its first B' rows) instead of allocating a new one: on a GPU a second
        # full-size cache could be gigabytes. Rows B'.. simply become unused.
        self.batch_size = len(idx)
        self.kv = self.kv[:, :, : self.batch_size]
        self.kv[..., : self.pos, :].copy_(kept)


# -----------------------------------------------------------------------------
# sampling one token per row


def sample_next_token(logits, generator, temperature=1.0, top_k=None, top_p=None):
    """
    logits (B, V) -> token ids (B,). temperature 0 is greedy (argmax). Otherwise, in this order: divide by the
    temperature, keep the top_k logits, keep the smallest set of tokens whose probability mass reaches top_p
    (nucleus sampling, arXiv 1904.09751), and draw one token per row from `generator`, so a seed reproduces.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    V = logits.size(-1)
    if top_k is not None and top_k < V:
        vals, idx = torch.topk(logits, top_k, dim=-1)  # (B, k); exactly k survive even with ties
        logits = torch.full_like(logits, float("-inf")).scatter_(-1, idx, vals)
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of all strictly better tokens
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))  # the top-1 always stays
        logits = torch.full_like(logits, float("-inf")).scatter_(-1, sorted_idx, sorted_logits)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    # Inverse-transform sampling: one uniform number per row, located in the row's CDF. torch.multinomial
    # draws O(V) random numbers per row on CPU, which at V = 8k costs as much as a small model's forward pass.
    # The CDF is summed in fp64 so that rounding over a 65k vocabulary cannot swallow the rarest tokens.
    # (Converting first and summing in place: cumsum(..., dtype=float64) takes a path ~9x slower on CPU.)
    cdf = probs.double().cumsum_(dim=-1)  # (B, V)
    u = torch.rand(probs.size(0), 1, generator=generator, device=probs.device, dtype=torch.float64) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.size(-1) - 1)  # first token with CDF > u
    # A token with CDF > u has probability > 0, unless rounding put u at the very top of the CDF and the clamp
    # landed on a masked tail token; that is rare, so it is fixed (with the most likely token) only when it happens.
    bad = probs.gather(-1, idx) == 0  # (B, 1)
    if bad.any():
        idx = torch.where(bad, probs.argmax(dim=-1, keepdim=True), idx)
    return idx.squeeze(-1)  # (B,)


def _check_sampling_args(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None to disable)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (or None to disable)")


# -----------------------------------------------------------------------------
# per-row bookkeeping: forced tokens, tool calls, thinking


class RowState:
    """What one sample row is doing: tokens queued to be forced, an open tool call, an open thinking span."""

    def __init__(self):
        self.forced = deque()  # token ids the engine will force next (tool output, "Wait", answer prefix)
        self.in_python = False
        self.python_tokens = []  # the tool call's expression so far
        self.thinking = False  # inside <|think_start|> ... <|think_end|>
        self.think_count = 0  # tokens so far inside the open thinking span
        self.waits = 0  # how many "Wait"s min_think_tokens has inserted
        self.num_generated = 0
        self.done = False


# -----------------------------------------------------------------------------
# the engine


def _model_device(model):
    return model.get_device() if hasattr(model, "get_device") else next(model.parameters()).device


class Engine:
    """
    Samples from a GPT with a KV cache: prefill the prompt once, clone the cache to N rows, decode all rows
    together, drop rows from the batch as they finish.

        engine = Engine(model, tokenizer)
        for token_column, forced_column in engine.generate(prompt_ids, num_samples=4, max_tokens=64):
            ...  # one token per row per step; forced 1 where the engine (not the model) chose the token
        results, masks = engine.generate_batch(prompt_ids, num_samples=4, max_tokens=64)
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        sid = tokenizer.encode_special
        self.bos = tokenizer.get_bos_token_id()
        self.assistant_end = sid("<|assistant_end|>")
        self.python_start, self.python_end = sid("<|python_start|>"), sid("<|python_end|>")
        self.output_start, self.output_end = sid("<|output_start|>"), sid("<|output_end|>")
        self.think_start, self.think_end = sid("<|think_start|>"), sid("<|think_end|>")

    def _open_span(self, tokens, start, end):
        """If the prompt ends inside a start...end span (e.g. it ends with <|think_start|>), the tokens in it."""
        for i in range(len(tokens) - 1, -1, -1):
            if tokens[i] == end:
                return None
            if tokens[i] == start:
                return list(tokens[i + 1:])
        return None

    def _initial_state(self, tokens):
        """A row's state after the prompt: a prompt can open a thinking span or a tool call for the model."""
        row = RowState()
        think = self._open_span(tokens, self.think_start, self.think_end)
        if think is not None:
            row.thinking, row.think_count = True, len(think)
        call = self._open_span(tokens, self.python_start, self.python_end)
        if call is not None:
            row.in_python, row.python_tokens = True, call
        return row

    def _check_prompt(self, tokens):
        if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, int) for t in tokens):
            raise ValueError("generate expects the prompt as a non-empty list of token ids (ints); "
                             "encode text with tokenizer.encode(...) or tokenizer.render_for_completion(...)")
        V = self.model.config.vocab_size
        bad = [t for t in tokens if not 0 <= t < V]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the model's vocabulary [0, {V}); "
                             f"was it encoded with a different tokenizer?")

    @torch.inference_mode()
    def generate(self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None, seed=42,
                 use_tools=True, max_think_tokens=None, min_think_tokens=None, max_waits=1, wait_text="Wait",
                 answer_prefix=None):
        """
        Yields, per step, (token_column, forced_column): lists of length num_samples with each row's next
        token and 1 where the engine forced it (tool output, budget forcing), 0 where the model sampled it.
        A row that has finished yields None in both from then on; the generator ends when every row is done.

        Rows stop after emitting <|assistant_end|> or <|bos|> (the stop token is yielded), after max_tokens
        tokens (None: until the model's rotary table is exhausted), whichever comes first.
        use_tools: evaluate <|python_start|>expr<|python_end|> with nanochat.calculator and force
            <|output_start|>result<|output_end|>; False leaves the model to do its own arithmetic.
        max_think_tokens: a thinking span that reaches this many tokens gets <|think_end|> forced, followed by
            the tokens of answer_prefix (e.g. "Final Answer:") if given (s1 budget forcing, arXiv 2501.19393).
        min_think_tokens: a <|think_end|> sampled before this many thinking tokens is replaced by wait_text,
            at most max_waits times per row; after that the model may end its thinking.
        """
        self._check_prompt(tokens)
        _check_sampling_args(temperature, top_k, top_p)
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        model, cfg = self.model, self.model.config
        device = _model_device(model)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        wait_ids = self.tokenizer.encode(wait_text)
        prefix_ids = self.tokenizer.encode(answer_prefix) if answer_prefix else []
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be >= 1 (or None: until a stop token)")
        limit = getattr(model, "rotary_len", None)  # the model cannot attend past its rotary table
        room = (limit - len(tokens)) if limit else None
        if room is not None and room <= 0:
            raise ValueError(f"the prompt has {len(tokens)} tokens but the model takes at most {limit}; shorten it")
        caps = [x for x in (max_tokens, room) if x is not None]
        max_tokens = min(caps) if caps else None

        # 1) prefill the prompt once, batch 1
        head_dim = cfg.n_embd // cfg.n_head
        cache = KVCache(1, cfg.n_kv_head, len(tokens) + min(max_tokens or 256, 1024), head_dim, cfg.n_layer)
        ids = torch.tensor([tokens], dtype=torch.long, device=device)  # (1, T)
        logits = model(ids, kv_cache=cache)[:, -1, :]  # (1, V)
        # 2) clone to N rows; every row then samples its own first token from the same prefill logits
        if num_samples > 1:
            cache = cache.clone_rows(num_samples, extra_len=min(max_tokens or 256, 1024))
            logits = logits.expand(num_samples, -1)  # (N, V), a view: no copy
        rows = [self._initial_state(tokens) for _ in range(num_samples)]
        active = list(range(num_samples))  # sample index of each row of the cache / logits, in order

        # 3) decode: one token per active row per step. On CPU, 4+ rows read weights packed for this generation
        # (gpt.packed_weights); packing costs what ~10 batch-16 steps save, so not for a handful of tokens
        long_enough = max_tokens is None or max_tokens >= 32
        with packed_weights(model, rows=num_samples if long_enough else 1):
            while True:
                sampled = sample_next_token(logits, generator, temperature, top_k, top_p).tolist()  # (A,)
                token_column, forced_column = [None] * num_samples, [None] * num_samples
                for i, s in enumerate(active):
                    token, forced = self._next_token(rows[s], sampled[i], use_tools, max_think_tokens, min_think_tokens,
                                                     max_waits, wait_ids, prefix_ids)
                    token_column[s], forced_column[s] = token, forced
                    rows[s].num_generated += 1
                    stop = token in (self.assistant_end, self.bos) and not forced
                    if stop or (max_tokens is not None and rows[s].num_generated >= max_tokens):
                        rows[s].done = True
                yield token_column, forced_column

                keep = [i for i, s in enumerate(active) if not rows[s].done]
                if not keep:
                    return
                if len(keep) < len(active):  # finished rows leave the batch: no more compute or memory for them
                    cache.keep_rows(keep)
                    active = [active[i] for i in keep]
                ids = torch.tensor([[token_column[s]] for s in active], dtype=torch.long, device=device)  # (A, 1)
                logits = model(ids, kv_cache=cache)[:, -1, :]  # (A, V)

    def _next_token(self, row, sampled, use_tools, max_think, min_think, max_waits, wait_ids, prefix_ids):
        """Decide one row's next token (sampled or forced) and update its tool/thinking state. -> (token, forced)"""
        if row.forced:
            token, forced = row.forced.popleft(), 1
        else:
            token, forced = sampled, 0
        # budget forcing (s1): the max budget wins over everything, including a pending "Wait" or tool output
        if row.thinking and max_think is not None and row.think_count >= max_think and token != self.think_end:
            token, forced = self.think_end, 1
            row.forced = deque(prefix_ids)
        elif (row.thinking and token == self.think_end and not forced and min_think is not None
              and row.think_count < min_think and row.waits < max_waits and wait_ids):
            token, forced = wait_ids[0], 1  # suppress the early end of thinking and make the model go on
            row.forced.extend(wait_ids[1:])
            row.waits += 1
        # thinking span bookkeeping
        if token == self.think_start and not row.thinking:
            row.thinking, row.think_count = True, 0
        elif row.thinking:
            if token == self.think_end:
                row.thinking = False
            else:
                row.think_count += 1
        # tool use: collect the expression, evaluate it at <|python_end|>, queue the result to be forced
        if use_tools and not forced:
            if token == self.python_start:
                row.in_python, row.python_tokens = True, []
            elif token == self.python_end and row.in_python:
                row.in_python = False
                result = calculate(self.tokenizer.decode(row.python_tokens))
                if result is not None:
                    row.forced.extend([self.output_start] + self.tokenizer.encode(result) + [self.output_end])
            elif row.in_python:
                row.python_tokens.append(token)
        return token, forced

    def generate_batch(self, tokens, num_samples=1, include_stop=False, **kwargs):
        """
        Run generate() to the end. Returns (results, masks): per row, the prompt followed by the generated
        tokens, and a mask that is 0 on the prompt and on forced tokens, 1 on sampled ones. The final stop
        token (<|assistant_end|> / <|bos|>) is left out unless include_stop=True (RL may want to train it).
        """
        results = [list(tokens) for _ in range(num_samples)]
        masks = [[0] * len(tokens) for _ in range(num_samples)]
        for token_column, forced_column in self.generate(tokens, num_samples, **kwargs):
            for s, (token, forced) in enumerate(zip(token_column, forced_column)):
                if token is None:
                    continue
                if token in (self.assistant_end, self.bos) and not forced and not include_stop:
                    continue
                results[s].append(token)
                masks[s].append(1 - forced)
        return results, masks


# -----------------------------------------------------------------------------
# streaming text: emit only complete UTF-8 characters


class StreamDecoder:
    """
    Turns a stream of token ids into text for a terminal or a browser. A BPE token can end in the middle of a
    multi-byte character (an emoji is often 2-4 byte tokens); decoding token by token would print U+FFFD.
    We keep the raw bytes and let Python's incremental UTF-8 decoder hold back an incomplete tail.

        dec = StreamDecoder(tokenizer)
        for t in ids: print(dec.push(t), end="")
        print(dec.flush())
    """

    def __init__(self, tokenizer, skip_special=False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.special_ids = {tokenizer.encode_special(s) for s in tokenizer.get_special_tokens()}
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _token_bytes(self, token_id):
        enc = getattr(self.tokenizer, "enc", None)  # tiktoken gives the exact bytes, even partial characters
        if enc is not None:
            return enc.decode_single_token_bytes(token_id)
        return self.tokenizer.decode([token_id]).encode("utf-8")

    def push(self, token_id):
        """Text that became complete with this token ("" while a character is still incomplete)."""
        if self.skip_special and token_id in self.special_ids:
            return ""
        return self.decoder.decode(self._token_bytes(token_id), final=False)

    def flush(self):
        """Whatever is left at the end of the stream (an incomplete character becomes U+FFFD)."""
        text = self.decoder.decode(b"", final=True)
        self.decoder.reset()
        return text
