"""
nanochat/chat_stream.py: TurnDecoder turns an assistant turn's tokens into display events and parts.
Oracle: the tokenizer's own render_conversation. Rendering parts to tokens and decoding those tokens back must
give the same parts; streamed text must never contain half characters.
Run: python -m pytest tests/test_chat_stream.py -q
"""
import pytest

from nanochat.chat_stream import TurnDecoder, inline_markup, render_part
from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(SPLIT_PATTERN, {bytes([i]): i for i in range(256)})  # byte-level: every emoji is 4 tokens


def assistant_tokens(tok, parts):
    """The tokens of one assistant turn (after <|assistant_start|>, including <|assistant_end|>)."""
    conv = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": parts}]}
    ids, _ = tok.render_conversation(conv)
    start = ids.index(tok.encode_special("<|assistant_start|>"))
    return ids[start + 1:]


def decode_all(tok, tokens):
    turn = TurnDecoder(tok)
    events = [e for t in tokens for e in turn.push(t)] + turn.finish()
    return turn, events


PARTS = [
    [{"type": "text", "text": "plain answer 🙂"}],
    [{"type": "think", "text": "hmm, 12*3 is… 🤔"}, {"type": "text", "text": "Let me check "},
     {"type": "python", "text": "12*3"}, {"type": "python_output", "text": "36"},
     {"type": "text", "text": " so 36 ✅"}],
    [{"type": "python", "text": "2**10"}, {"type": "python_output", "text": "1024"}],
]


@pytest.mark.parametrize("parts", PARTS)
def test_parts_round_trip_through_tokens(tok, parts):
    turn, events = decode_all(tok, assistant_tokens(tok, parts))
    assert turn.parts == parts and turn.stopped
    assert "".join(inline_markup(*e) for e in events) == "".join(render_part(p) for p in parts)
    # every delta is whole text: a 4-byte emoji is 4 tokens here but arrives as one piece
    deltas = [text for ev, _, text in events if ev == "delta"]
    assert not any("\ufffd" in d for d in deltas)
    for ch in "🙂🤔✅":
        if any(ch in p["text"] for p in parts):
            assert any(ch in d for d in deltas)


def test_events_are_balanced_and_kinds_are_right(tok):
    _, events = decode_all(tok, assistant_tokens(tok, PARTS[1]))
    opened = [(ev, kind) for ev, kind, _ in events if ev != "delta"]
    assert opened == [("start", "think"), ("end", "think"), ("start", "python"), ("end", "python"),
                      ("start", "python_output"), ("end", "python_output")]
    kinds = [kind for ev, kind, text in events if ev == "delta"]
    assert kinds[0] == "think" and kinds[-1] == "text"


def test_unclosed_span_is_closed_at_finish_and_stray_tokens(tok):
    sid = tok.encode_special
    tokens = [sid("<|think_start|>")] + tok.encode("still thinking") + [0xF0, 0x9F]  # half an emoji at the end
    turn, events = decode_all(tok, tokens)
    assert not turn.stopped
    assert events[-1] == ("end", "think", "")
    assert turn.parts == [{"type": "think", "text": "still thinking\ufffd"}]  # the half character, flagged once
    # a closer that does not match the open span, and other specials, show nothing
    turn, events = decode_all(tok, tok.encode("a") + [sid("<|python_end|>"), sid("<|user_start|>")] + tok.encode("b"))
    assert turn.parts == [{"type": "text", "text": "ab"}]


def test_tokens_after_the_stop_are_ignored(tok):
    sid = tok.encode_special
    turn, _ = decode_all(tok, tok.encode("done") + [sid("<|assistant_end|>")] + tok.encode("more"))
    assert turn.parts == [{"type": "text", "text": "done"}] and turn.stopped and turn.num_tokens == 5
    turn, _ = decode_all(tok, tok.encode("x") + [sid("<|bos|>")])
    assert turn.stopped


def test_all_special_tokens_known(tok):
    # every special token the tokenizer has is either a span marker, a stop, or silently dropped: none crash
    turn = TurnDecoder(tok)
    for s in SPECIAL_TOKENS:
        turn.push(tok.encode_special(s))
