"""
A small, obviously correct byte-level BPE: the oracle that rustbpe (and nanochat's tokenizer) are tested against.

Slow on purpose (it recounts every pair after every merge); only for tiny corpora in tests.

    from tests.bpe_reference import train_bpe, encode_bpe, DEFAULT_PATTERN
    merges, ranks = train_bpe(["some text", ...], vocab_size=300)
    ids = encode_bpe("some text", ranks)

Rules it shares with rustbpe (see rustbpe/src/train.rs):
  - the text is split into chunks with the pattern (the `regex` module: it supports the possessive
    quantifiers of the GPT-4 pattern); merges never cross chunks;
  - each step merges the most frequent adjacent pair, counting each chunk as often as it occurred;
    ties go to the lexicographically smallest (left_id, right_id);
  - a pair whose bytes already spell an existing token is skipped for good, so token bytes are unique;
  - merging (a, b) rewrites a chunk left to right without overlap (a a a -> z a);
  - encoding is tiktoken's greedy rule: repeatedly merge the adjacent pieces whose concatenation has
    the lowest rank (the leftmost on a tie).
"""
from collections import Counter

import regex

# GPT-4's split pattern with \p{N}{1,2} digit groups (the same string as rustbpe.DEFAULT_PATTERN)
DEFAULT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

# -----------------------------------------------------------------------------
# training


def split_chunks(text, pattern=DEFAULT_PATTERN):
    return regex.findall(pattern, text)


def merge_ids(ids, pair, new_id):
    """Replace every occurrence of pair in ids, scanning left to right without overlap."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(texts, vocab_size, pattern=DEFAULT_PATTERN):
    """Returns (merges, ranks): merges[k] = (left, right) made token 256 + k; ranks = {bytes: id}."""
    chunk_counts = Counter(c for t in texts for c in split_chunks(t, pattern))
    words = [list(c.encode("utf-8")) for c in chunk_counts]
    weights = list(chunk_counts.values())
    token_bytes = [bytes([i]) for i in range(256)]
    known = set(token_bytes)
    banned = set()
    merges = []
    while len(token_bytes) < vocab_size:
        pair_counts = Counter()
        for ids, w in zip(words, weights):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += w
        candidates = [(-count, pair) for pair, count in pair_counts.items() if pair not in banned]
        if not candidates:
            break
        _, best = min(candidates)  # highest count, then smallest (left, right)
        new_bytes = token_bytes[best[0]] + token_bytes[best[1]]
        if new_bytes in known:
            banned.add(best)
            continue
        new_id = len(token_bytes)
        token_bytes.append(new_bytes)
        known.add(new_bytes)
        merges.append(best)
        words = [merge_ids(ids, best, new_id) for ids in words]
    ranks = {b: i for i, b in enumerate(token_bytes)}
    return merges, ranks


# -----------------------------------------------------------------------------
# encoding


def encode_chunk(chunk_bytes, ranks):
    parts = [bytes([b]) for b in chunk_bytes]
    while len(parts) > 1:
        best = None  # (rank, index)
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def encode_bpe(text, ranks, pattern=DEFAULT_PATTERN):
    ids = []
    for chunk in split_chunks(text, pattern):
        ids.extend(encode_chunk(chunk.encode("utf-8"), ranks))
    return ids


def decode_bpe(ids, ranks):
    inverse = {i: b for b, i in ranks.items()}
    return b"".join(inverse[i] for i in ids).decode("utf-8", errors="replace")
