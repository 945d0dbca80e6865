"""
Inference engine: a KV cache and (below, as it lands) batched sampling with tool use and thinking budgets.

Everything that samples from a model (chat_cli, chat_web, chat_eval, the RL family) goes through here, so the
model file stays a pure function of tokens and the engine owns all the bookkeeping of generation.

The KV cache contract with nanochat/gpt.py:
    pos = kv_cache.get_pos()                  # rotary offset for the new tokens, read before inserting
    k, v = kv_cache.insert_kv(layer_idx, k, v) # k, v: (B, H_kv, T_new, D) in; (B, H_kv, pos + T_new, D) views out
    the cache advances pos by T_new after the last layer has inserted.
"""
import torch

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
        self.kv[layer_idx, 0, :, :, t0:t1] = k
        self.kv[layer_idx, 1, :, :, t0:t1] = v
        keys = self.kv[layer_idx, 0, :, :, :t1]  # (B, H_kv, t1, D)
        values = self.kv[layer_idx, 1, :, :, :t1]  # (B, H_kv, t1, D)
        if layer_idx == self.num_layers - 1:
            self.pos = t1
        return keys, values

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
        # Only copy the filled prefix; the new buffer keeps the same capacity.
        kept = self.kv[..., : self.pos, :].index_select(2, idx)  # (L, 2, B', H_kv, pos, D)
        self.batch_size = len(idx)
        self._allocate(kept.device, kept.dtype)
        self.kv[..., : self.pos, :].copy_(kept)
