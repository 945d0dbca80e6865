"""
Tests for nanochat.dataloader: BOS alignment, targets = inputs shifted, best-fit packing against a naive
reference packer, exact resume (1 and 2 ranks, across epochs), rank partition, state validation.

The tokenizer is the real nanochat Tokenizer with a byte-level vocabulary (256 byte tokens, no merges), so
no trained merges (and no Rust build) are needed: a document of n ASCII characters is exactly n + 1 tokens.

    python -m pytest tests/test_dataloader.py -q
"""
import os
import re
import json
import random
import itertools

import pytest
import torch

from nanochat.tokenizer import Tokenizer, SPLIT_PATTERN
from nanochat.dataset import write_shard, iter_documents
from nanochat.dataloader import DataLoader

T, B = 64, 4
SMALL = dict(buffer_docs=16, tokenizer_batch=5, tokenizer_threads=2)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(SPLIT_PATTERN, {bytes([i]): i for i in range(256)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 shards x 40 docs (row groups of 8) of lengths 1..3T characters; a 24-doc val shard."""
    ddir = str(tmp_path_factory.mktemp("data"))
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    k = 0
    for s in range(3):
        docs = []
        for _ in range(40):
            n = rng.choice([rng.randint(1, 20), rng.randint(20, T), rng.randint(T, 3 * T)])
            text = f"[{k}] " + " ".join(rng.choice(words) for _ in range(n))
            docs.append(text[: max(len(f"[{k}]"), n)])
            k += 1
        write_shard(os.path.join(ddir, f"shard_{s:05d}.parquet"), docs, rows_per_group=8)
    write_shard(os.path.join(ddir, "val_shard.parquet"), [f"val doc {i} " * (i + 1) for i in range(24)], 4)
    return ddir


def batches(loader, n):
    return [tuple(t.clone() for t in next(loader)) for _ in range(n)]


def full_rows(x, y):
    """The T+1 tokens of each row: inputs plus the last target."""
    return torch.cat([x, y[:, -1:]], dim=1)

# -----------------------------------------------------------------------------
# shapes, alignment, packing


def test_rows_start_with_bos_and_targets_are_shifted(tok, data):
    loader = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    for x, y in batches(loader, 10):
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
        assert (x[:, 0] == tok.get_bos_token_id()).all()
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_rows_are_whole_documents_then_one_cropped_prefix(tok, data):
    docs = set(iter_documents("train", ddir=data))
    bos = tok.get_bos_token_id()
    loader = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    for x, y in batches(loader, 10):
        for row in full_rows(x, y).tolist():
            starts = [i for i, t in enumerate(row) if t == bos]
            assert starts[0] == 0
            segments = [tok.decode(row[a + 1:b]) for a, b in zip(starts, starts[1:] + [len(row)])]
            assert all(s in docs for s in segments[:-1])               # every segment but the last is whole
            assert any(d.startswith(segments[-1]) for d in docs)      # the last one may be cropped


def reference_rows(tok, docs, n_rows, buffer_docs, tok_batch):
    """Naive best-fit: scan the whole buffer for the largest doc that fits (oldest on ties), else crop the shortest."""
    stream = itertools.cycle([[tok.get_bos_token_id()] + tok.encode(d) for d in docs])
    buf, rows, cropped = [], [], 0
    for _ in range(n_rows):
        row = []
        while len(row) < T + 1:
            while len(buf) < buffer_docs:
                buf += [next(stream) for _ in range(tok_batch)]
            space = T + 1 - len(row)
            fits = [i for i, d in enumerate(buf) if len(d) <= space]
            if fits:
                i = max(fits, key=lambda i: (len(buf[i]), -i))
            else:
                i = min(range(len(buf)), key=lambda i: (len(buf[i]), i))
            d = buf.pop(i)
            cropped += max(0, len(d) - space)
            row += d[:space]
        rows.append(row)
    return rows, cropped


def test_best_fit_matches_naive_reference_across_epochs(tok, data):
    docs = list(iter_documents("train", ddir=data))
    n_batches = 40  # 160 rows of 65 tokens: more than the ~120 documents, so the stream wraps into epoch 2
    loader = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    got = torch.cat([full_rows(x, y) for x, y in batches(loader, n_batches)]).tolist()
    want, cropped = reference_rows(tok, docs, n_batches * B, SMALL["buffer_docs"], SMALL["tokenizer_batch"])
    assert got == want
    assert loader.stats["tokens_cropped"] == cropped and loader.stats["tokens_used"] == n_batches * B * (T + 1)
    assert loader.next_pos[0] >= 1  # we really did wrap around


def test_val_split(tok, data):
    loader = DataLoader(tok, 2, 16, split="val", data_dir=data, rank=0, world_size=1, **SMALL)
    x, _ = next(loader)
    assert tok.decode(x[0, 1:].tolist()).startswith("val doc")

# -----------------------------------------------------------------------------
# exact resume


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("k", [1, 7, 33])
def test_resume_is_bit_identical(tok, data, world_size, k):
    for rank in range(world_size):
        ref = DataLoader(tok, B, T, data_dir=data, rank=rank, world_size=world_size, **SMALL)
        expected = batches(ref, k + 20)
        first = DataLoader(tok, B, T, data_dir=data, rank=rank, world_size=world_size, **SMALL)
        batches(first, k)
        state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
        resumed = DataLoader(tok, B, T, data_dir=data, rank=rank, world_size=world_size, **SMALL)
        resumed.load_state_dict(state)
        for (x, y), (ex, ey) in zip(batches(resumed, 20), expected[k:]):
            assert torch.equal(x, ex) and torch.equal(y, ey)
        assert resumed.stats == ref.stats


def test_resume_with_a_different_batch_size_continues_the_same_rows(tok, data):
    ref = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    rows = torch.cat([full_rows(x, y) for x, y in batches(ref, 6)])
    first = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    batches(first, 2)
    resumed = DataLoader(tok, 2 * B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(torch.cat([full_rows(x, y) for x, y in batches(resumed, 2)]), rows[2 * B:])


def test_state_from_other_settings_is_refused(tok, data):
    state = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL).state_dict()
    other = DataLoader(tok, B, 2 * T, data_dir=data, rank=0, world_size=1, **SMALL)
    with pytest.raises(ValueError, match="seq_len=64.*same settings"):
        other.load_state_dict(state)
    other = DataLoader(tok, B, T, data_dir=data, rank=1, world_size=2, **SMALL)
    with pytest.raises(ValueError, match="rank"):
        other.load_state_dict(state)

# -----------------------------------------------------------------------------
# ranks


def test_two_ranks_pack_disjoint_documents(tok, data):
    bos = tok.get_bos_token_id()
    seen = []
    for rank in range(2):
        loader = DataLoader(tok, B, T, data_dir=data, rank=rank, world_size=2, buffer_docs=4, tokenizer_batch=2)
        ids = set()
        for _ in range(4):  # a few batches: well inside the first epoch of each rank
            for row in full_rows(*next(loader)).tolist():
                starts = [i for i, t in enumerate(row) if t == bos]
                heads = [re.match(r"\[(\d+)\]", tok.decode(row[a + 1:a + 8])) for a in starts]
                ids |= {int(m.group(1)) for m in heads if m}  # cropped-away heads have no full "[k]"
        seen.append(ids)
    assert seen[0] and seen[1] and not (seen[0] & seen[1])


def test_rank_without_row_groups_gets_a_clear_error(tok, data):
    with pytest.raises(ValueError, match="fewer row groups than ranks"):
        DataLoader(tok, B, T, split="val", data_dir=data, rank=7, world_size=8)  # val has 6 row groups


def test_default_rank_comes_from_the_environment(tok, data, monkeypatch):
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("LOCAL_RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "3")
    loader = DataLoader(tok, B, T, data_dir=data, **SMALL)
    assert (loader.rank, loader.world_size) == (1, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu_batches(tok, data):
    cpu = DataLoader(tok, B, T, data_dir=data, rank=0, world_size=1, **SMALL)
    gpu = DataLoader(tok, B, T, device="cuda", data_dir=data, rank=0, world_size=1, **SMALL)
    for (x, y), (gx, gy) in zip(batches(cpu, 5), batches(gpu, 5)):
        assert gx.device.type == "cuda" and gx.is_contiguous() and gy.is_contiguous()
        assert torch.equal(gx.cpu(), x) and torch.equal(gy.cpu(), y)
