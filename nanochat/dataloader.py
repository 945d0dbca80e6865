"""
Tokenized pretraining batches: (inputs, targets) of shape (B, T), DDP-sharded, BOS-aligned, exactly resumable.

    tok = get_tokenizer()
    loader = DataLoader(tok, batch_size=8, seq_len=2048, split="train", device="cuda")
    for step, (x, y) in zip(range(num_steps), loader):   # x, y: (B, T) int64; y is x shifted left by one
        ...
    state = loader.state_dict()       # JSON-able; per rank
    loader.load_state_dict(state)     # the next batches are bit-identical to the uninterrupted run's

How rows are built (BOS-aligned best-fit packing). Every document is tokenized as [<|bos|>, doc tokens...].
A row holds T+1 tokens (inputs are the first T, targets the last T) and always starts at a document start, so
the model never sees a row that begins mid-document without its context. We keep a buffer of ~1000 tokenized
documents and fill each row greedily: put in the largest buffered document that still fits in the space left
(best fit); when no document fits, take the shortest one and crop it to the space left, throwing its rest away.
No padding, no row starting mid-document; the price is the cropped tail. Cropped fraction of tokenized tokens
on the offline corpus (`python -m nanochat.dataset --local`, an 8192-token BPE trained on it, buffer of 1000
documents; measured 2026-11-21 with `python -m scripts.loader_bench --waste`): 7.9% at T=2048 and 64.4% at
T=256. Its documents average ~2.8k characters (~700 tokens), so at T=256 most of them are longer than a row
and a row is mostly one cropped document; the loader then tokenizes ~2.8 tokens per token it yields. At
T=2048 nearly every document fits whole and only the last one of a row is cut.

DDP: rank r reads the row groups whose global index (counted across the split's shards) % world_size == r
(see nanochat.dataset.rank_row_groups), so ranks see disjoint documents; their union is the whole split. Epochs: the stream restarts at shard 0 forever.

Exact resume: the shards are pre-shuffled, so the loader has no RNG. Its whole state is where the document
stream continues (epoch, shard, row group, row) and which documents sit in the buffer, named by their
(epoch, shard, row group, row). Buffer documents arrive in stream order, so sorting their names recovers the
arrival order that breaks best-fit ties; reloading re-reads and re-tokenizes exactly those documents.
The batch size is not part of the state (rows are produced one by one), the sequence length and ranks are.

Overlap on GPU: batches are built in pinned memory and copied with non_blocking=True, so while the GPU runs
step k (launched asynchronously) the CPU tokenizes and packs batch k+1. The loader is never on the critical
path as long as it produces tokens faster than a step consumes them (see scripts/loader_bench.py).
"""
import bisect

import numpy as np
import torch

from nanochat.common import get_dist_info
from nanochat.dataset import list_shards, open_shard, read_row_group, iter_row_groups, rank_row_groups

STATE_VERSION = 1

# -----------------------------------------------------------------------------
# the buffer of tokenized documents, indexed by length for best-fit lookups


class DocBuffer:
    """Documents bucketed by length; within a length, oldest first (that is the deterministic tie-break)."""

    def __init__(self):
        self.lengths = []   # sorted distinct lengths present
        self.buckets = {}   # length -> list of (doc_id, tokens), in arrival order
        self.count = 0

    def __len__(self):
        return self.count

    def add(self, doc_id, tokens):
        n = len(tokens)
        if n not in self.buckets:
            bisect.insort(self.lengths, n)
            self.buckets[n] = []
        self.buckets[n].append((doc_id, tokens))
        self.count += 1

    def _pop_length(self, n):
        bucket = self.buckets[n]
        item = bucket.pop(0)
        self.count -= 1
        if not bucket:
            del self.buckets[n]
            self.lengths.pop(bisect.bisect_left(self.lengths, n))
        return item

    def pop_largest_fitting(self, space):
        """The largest document with len <= space, or None."""
        i = bisect.bisect_right(self.lengths, space)
        return self._pop_length(self.lengths[i - 1]) if i else None

    def pop_shortest(self):
        return self._pop_length(self.lengths[0])

    def doc_ids(self):
        return sorted(doc_id for b in self.buckets.values() for doc_id, _ in b)

# -----------------------------------------------------------------------------
# the loader


class DataLoader:
    """Iterator of (inputs, targets), each (B, T) int64 on `device`. See the module docstring."""

    def __init__(self, tokenizer, batch_size, seq_len, split="train", device="cpu", tokenizer_threads=4,
                 tokenizer_batch=128, buffer_docs=1000, rank=None, world_size=None, data_dir=None):
        if rank is None or world_size is None:
            _, rank, _, world_size = get_dist_info()
        assert 0 <= rank < world_size, f"rank {rank} is not in 0..{world_size - 1}"
        self.tokenizer, self.bos = tokenizer, tokenizer.get_bos_token_id()
        self.B, self.T, self.split = batch_size, seq_len, split
        self.device = torch.device(device)
        self.threads, self.tok_batch, self.buffer_docs = tokenizer_threads, tokenizer_batch, buffer_docs
        self.rank, self.world_size, self.data_dir = rank, world_size, data_dir
        self._check_rank_has_data()
        self.buffer = DocBuffer()
        self.next_pos = (0, 0, 0, 0)   # (epoch, shard, row group, row) of the next document to read
        self._stream = None
        self.stats = {"rows": 0, "tokens_used": 0, "tokens_cropped": 0}

    def _check_rank_has_data(self):
        if not rank_row_groups(self.split, self.rank, self.world_size, self.data_dir):
            raise ValueError(f"rank {self.rank} of {self.world_size} gets no documents of split {self.split!r}: "
                             f"it has fewer row groups than ranks; use fewer ranks or more data")

    # --- the document stream: (doc_id, text) forever, epoch after epoch

    def _documents(self, pos):
        epoch, shard, rg, row = pos
        while True:
            for si, ri, texts in iter_row_groups(self.split, (shard, rg), self.rank, self.world_size, self.data_dir):
                first = row if (si, ri) == (shard, rg) else 0
                for j in range(first, len(texts)):
                    yield (epoch, si, ri, j), texts[j]
            epoch, shard, rg, row = epoch + 1, 0, 0, 0

    def _refill(self):
        """Read and tokenize the next tokenizer_batch documents into the buffer."""
        if self._stream is None:
            self._stream = self._documents(self.next_pos)
        ids, texts = [], []
        for doc_id, text in self._stream:
            ids.append(doc_id)
            texts.append(text)
            if len(texts) == self.tok_batch:
                break
        for doc_id, tokens in zip(ids, self.tokenizer.encode(texts, prepend=self.bos, num_threads=self.threads)):
            self.buffer.add(doc_id, tokens)
        e, s, r, j = ids[-1]
        self.next_pos = (e, s, r, j + 1)

    # --- packing

    def _fill_row(self, row):
        """Fill one row (a length T+1 int64 numpy view) with whole documents, cropping at most the last one."""
        pos, n = 0, len(row)
        while pos < n:
            while len(self.buffer) < self.buffer_docs:
                self._refill()
            item = self.buffer.pop_largest_fitting(n - pos)
            if item is None:  # nothing fits: crop the shortest document into the space left
                _, tokens = self.buffer.pop_shortest()
                self.stats["tokens_cropped"] += len(tokens) - (n - pos)
                tokens = tokens[:n - pos]
            else:
                tokens = item[1]
            row[pos:pos + len(tokens)] = tokens
            pos += len(tokens)
        self.stats["rows"] += 1
        self.stats["tokens_used"] += n

    def __iter__(self):
        return self

    def __next__(self):
        rows = np.empty((self.B, self.T + 1), dtype=np.int64)
        for i in range(self.B):
            self._fill_row(rows[i])
        cuda = self.device.type == "cuda"
        xy = torch.empty((2, self.B, self.T), dtype=torch.int64, pin_memory=cuda)  # fresh: no overwrite in flight
        xy[0].numpy()[:] = rows[:, :-1]
        xy[1].numpy()[:] = rows[:, 1:]
        if self.device.type != "cpu":
            xy = xy.to(self.device, non_blocking=cuda)
        return xy[0], xy[1]

    # --- exact resume

    def state_dict(self):
        groups = {}  # (epoch, shard, row group) -> rows: a compact, JSON-able list of the buffered documents
        for e, s, r, j in self.buffer.doc_ids():
            groups.setdefault((e, s, r), []).append(j)
        return {"version": STATE_VERSION, "split": self.split, "seq_len": self.T, "rank": self.rank,
                "world_size": self.world_size, "buffer_docs": self.buffer_docs, "tokenizer_batch": self.tok_batch,
                "vocab_size": self.tokenizer.get_vocab_size(), "next_pos": list(self.next_pos),
                "buffer": [[e, s, r, rows] for (e, s, r), rows in sorted(groups.items())],
                "stats": dict(self.stats)}

    def load_state_dict(self, state):
        mine = self.state_dict()
        for key in ("version", "split", "seq_len", "rank", "world_size", "buffer_docs", "tokenizer_batch", "vocab_size"):
            if state.get(key) != mine[key]:
                raise ValueError(f"loader state has {key}={state.get(key)!r} but this loader has {mine[key]!r}; "
                                 f"resume with the same settings (or start the data from scratch)")
        self.buffer, self._stream = DocBuffer(), None
        self.next_pos = tuple(state["next_pos"])
        shards = list_shards(self.split, self.data_dir)
        ids, texts = [], []
        for e, s, r, rows in state["buffer"]:
            group = read_row_group(open_shard(shards[s]), r)
            ids += [(e, s, r, j) for j in rows]
            texts += [group[j] for j in rows]
        for i in range(0, len(texts), self.tok_batch):
            chunk = self.tokenizer.encode(texts[i:i + self.tok_batch], prepend=self.bos, num_threads=self.threads)
            for doc_id, tokens in zip(ids[i:i + self.tok_batch], chunk):
                self.buffer.add(doc_id, tokens)
        self.stats = dict(state["stats"])
