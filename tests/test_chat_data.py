"""
Tests of nanochat/chat_data.py: mixture specs, and the packed (mid) and padded (SFT) loaders checked against
references built directly from tokenizer.render_conversation; DDP sharding, exact resume.

    python -m pytest tests/test_chat_data.py -q
"""
import pytest
import torch

from nanochat.chat_data import (PackedChatLoader, PaddedChatLoader, build_mixture, parse_mix, _take)
from tasks.common import Task, chat
from tests.tiny_model import small_tokenizer


CORPUS = ["How many apples does Ava have now? 12*3 = 36, 7+8 = 15. The answer is 42." * 3] * 10


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer(CORPUS, num_merges=64)


class ListTask(Task):
    """Conversations of varied lengths: user asks i, assistant answers with i words (plus a tool call sometimes)."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def num_examples(self):
        return self.n

    def get_example(self, i):
        words = " ".join(["word"] * (1 + (i * 7) % 23))
        answer = words if i % 3 else [{"type": "text", "text": words}, {"type": "python", "text": "2+2"},
                                      {"type": "python_output", "text": "4"}]
        return chat(f"question {i}?", answer)


def reference(tok, task, i, T):
    return tok.render_conversation(task[i], max_tokens=T + 1)


# -----------------------------------------------------------------------------
# mixture specs


def test_parse_mix_and_errors():
    assert parse_mix("synthmath:5000, spelling ,mcq:all") == [("synthmath", 5000), ("spelling", None), ("mcq", None)]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        parse_mix("nope:3")
    with pytest.raises(ValueError, match="bad count"):
        parse_mix("synthmath:-3")
    with pytest.raises(ValueError, match="empty mixture"):
        parse_mix(" , ")


def test_build_mixture_sizes_and_offline_guard():
    task, parts = build_mixture("synthmath:30,mcq:20,identity:5", "train", "offline")
    assert parts == [("synthmath", 30), ("mcq", 20), ("identity", 5)] and len(task) == 55
    names = sorted(task[i]["task"] for i in range(len(task)))
    assert names.count("SynthMath") == 30 and names.count("MCQ") == 20 and names.count("Identity") == 5
    val, _ = build_mixture("synthmath:10", "val", "offline")
    assert all(val[i]["id"].startswith("test-") for i in range(10))  # held-out = the synthetic test split
    with pytest.raises(ValueError, match="needs Hugging Face"):
        build_mixture("smoltalk:10", "train", "offline")


def test_take_slices_and_upsamples():
    base = ListTask(5)
    assert len(_take(base, 3, seed=1)) == 3
    up = _take(base, 12, seed=1)
    questions = [up[i]["messages"][0]["content"] for i in range(12)]
    assert len(up) == 12 and sorted(set(questions)) == sorted(f"question {i}?" for i in range(5))
    assert max(questions.count(q) for q in questions) == 3  # 12 = 5 + 5 + 2


# -----------------------------------------------------------------------------
# padded rows (SFT)


def test_padded_rows_match_reference(tok):
    task, T, B = ListTask(10), 40, 4
    loader = PaddedChatLoader(tok, task, B, T)
    for batch in range(3):  # 12 rows: wraps into a second epoch
        x, y = next(loader)
        refs = [reference(tok, task, (batch * B + b) % len(task), T) for b in range(B)]
        assert x.shape[1] == max(len(ids) for ids, _ in refs) - 1 <= T
        for b, (ids, mask) in enumerate(refs):
            n = len(ids) - 1
            assert x[b, :n].tolist() == ids[:-1]
            want = [t if m else -1 for t, m in zip(ids[1:], mask[1:])]
            assert y[b, :n].tolist() == want
            assert (y[b, n:] == -1).all()  # padding is never learned
    assert loader.progress == pytest.approx(12 / 10)


def test_padded_ddp_shards_are_disjoint_and_resume_is_exact(tok):
    task = ListTask(12)
    r0, r1 = (PaddedChatLoader(tok, task, 2, 64, rank=r, world_size=2) for r in (0, 1))
    seen = []
    for loader in (r0, r1):
        for _ in range(3):
            x, _ = next(loader)
            seen += [tuple(row[row != tok.get_bos_token_id()].tolist()) for row in x]  # strip padding
    full = [tuple(reference(tok, task, i, 64)[0][1:-1]) for i in range(12)]  # ids[:-1] minus the leading bos
    assert sorted(s for s in seen) == sorted(full)  # every conversation exactly once over the two ranks
    state = r0.state_dict()
    nxt = [next(r0) for _ in range(2)]
    fresh = PaddedChatLoader(tok, task, 2, 64, rank=0, world_size=2)
    fresh.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(nxt, [next(fresh) for _ in range(2)]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="world_size"):
        PaddedChatLoader(tok, task, 2, 64, rank=0, world_size=1).load_state_dict(state)


# -----------------------------------------------------------------------------
# packed rows (mid-training)


def segments(row_ids, bos):
    """Split a row at every <|bos|>: the conversations it holds (padding is bos too, split into empty ones)."""
    out, cur = [], []
    for t in row_ids:
        if t == bos and cur:
            out.append(cur)
            cur = []
        cur.append(t)
    out.append(cur)
    return out


@pytest.mark.parametrize("mask_loss", [False, True])
def test_packed_rows_hold_whole_conversations(tok, mask_loss):
    task, T, B = ListTask(30), 64, 2
    bos = tok.get_bos_token_id()
    renders = {tuple(reference(tok, task, i, T)[0]): reference(tok, task, i, T)[1] for i in range(len(task))}
    loader = PackedChatLoader(tok, task, B, T, mask_loss=mask_loss, buffer_size=8)
    for _ in range(4):
        x, y = next(loader)
        assert x.shape == y.shape == (B, T)
        for b in range(B):
            assert x[b, 0] == bos  # BOS-aligned
            # the row's T+1 tokens: x, then the last target (a masked or padded last token reads as bos)
            full = x[b].tolist() + [int(y[b, -1]) if y[b, -1] >= 0 else bos]
            pos, whole = 0, 0
            for seg in segments(full, bos):
                if tuple(seg) in renders:  # a whole conversation, untouched
                    whole += 1
                    mask = renders[tuple(seg)]
                    for j in range(len(seg)):
                        if pos + j >= 1:  # the token at row position p is target p-1
                            expect = seg[j] if (mask[j] or not mask_loss) else -1
                            assert int(y[b, pos + j - 1]) == expect
                else:  # only padding (lone bos tokens) may be anything else, and it is never learned
                    assert all(t == bos for t in seg)
                    for j in range(len(seg)):
                        if pos + j >= 1:
                            assert int(y[b, pos + j - 1]) == -1
                pos += len(seg)
            assert whole >= 1 and pos == T + 1


def test_packed_best_fit_and_resume(tok):
    task, T = ListTask(40), 64
    loader = PackedChatLoader(tok, task, 2, T, buffer_size=6)
    for _ in range(3):
        next(loader)
    assert loader.stats["padding"] < 0.3 * loader.stats["rows"] * (T + 1)  # best fit leaves little padding
    state = loader.state_dict()
    want = [next(loader) for _ in range(3)]
    again = PackedChatLoader(tok, task, 2, T, buffer_size=6)
    again.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(want, [next(again) for _ in range(3)]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert 0 < again.progress == loader.progress


def test_packed_ddp_ranks_read_disjoint_positions(tok):
    task = ListTask(20)
    loaders = [PackedChatLoader(tok, task, 1, 64, buffer_size=4, rank=r, world_size=2) for r in (0, 1)]
    for loader in loaders:
        next(loader)
    positions = [set(p for p, _, _ in loader.buffer) | set(range(loader.rank, loader.next_pos, 2)) for loader in loaders]
    assert not positions[0] & positions[1]
    assert all(p % 2 == 0 for p in positions[0]) and all(p % 2 == 1 for p in positions[1])
